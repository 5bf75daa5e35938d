"""Real generation on the tiny demo models: greedy parity with mlx-lm, seeds, stops, limits."""

from __future__ import annotations

import pytest

from mlxk2.engine.chat import build_prompt_tokens
from mlxk2.engine.events import Delta, Finished
from mlxk2.engine.generate import generate, plan_max_tokens
from mlxk2.engine.sampling import MAX_SEED, SamplingParams
from mlxk2.errors import ValidationError

# Greedy output of the seed-0 tiny chat model: the first runs into the limit,
# the second ends with an end-of-turn token after 14 tokens.
LONG_PROMPT = "What is the capital of France?"
SHORT_PROMPT = "Hello! How are you?"


def chat_tokens(loaded, text: str) -> list[int]:
    return build_prompt_tokens(loaded.tokenizer, [{"role": "user", "content": text}])


def run(loaded, prompt: list[int], params: SamplingParams | None = None, **kwargs):
    events = list(generate(loaded, prompt, params or SamplingParams(), **kwargs))
    *chunks, done = events
    assert isinstance(done, Finished)
    assert all(isinstance(c, Delta) for c in chunks)
    return "".join(c.reasoning + c.content for c in chunks), done


@pytest.mark.parametrize("text", [LONG_PROMPT, SHORT_PROMPT])
def test_greedy_output_equals_raw_mlx_lm_token_for_token(demo_cache, tiny_chat, text):
    from mlx_lm import generate as mlx_generate
    from mlx_lm import load as mlx_load
    from mlx_lm import stream_generate

    model, tokenizer = mlx_load(str(demo_cache.paths["mlxk2/demo-chat"]))
    messages = [{"role": "user", "content": text}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    raw_text = mlx_generate(model, tokenizer, prompt, max_tokens=40)
    raw_tokens = [r.token for r in stream_generate(model, tokenizer, prompt, max_tokens=40)]

    ours = chat_tokens(tiny_chat, text)
    assert ours == list(prompt)
    out, done = run(tiny_chat, ours, max_tokens=40)
    assert list(done.token_ids) == raw_tokens
    assert out == raw_text
    assert done.completion_tokens == len(raw_tokens)
    assert done.prompt_tokens == len(prompt)


def test_hitting_max_tokens_reports_length(tiny_chat):
    out, done = run(tiny_chat, chat_tokens(tiny_chat, LONG_PROMPT), max_tokens=7)
    assert done.finish_reason == "length"
    assert done.completion_tokens == 7
    assert out


def test_end_of_turn_token_stops_and_is_never_printed(tiny_chat):
    out, done = run(tiny_chat, chat_tokens(tiny_chat, SHORT_PROMPT), max_tokens=100)
    assert done.finish_reason == "stop"
    assert done.completion_tokens < 100
    assert done.token_ids[-1] in tiny_chat.stop_token_ids
    assert "<|" not in out


def test_stop_string_spanning_tokens_is_trimmed(tiny_chat):
    prompt = chat_tokens(tiny_chat, LONG_PROMPT)
    full, done = run(tiny_chat, prompt, max_tokens=30)
    decode = tiny_chat.tokenizer.decode
    boundaries = {len(decode(list(done.token_ids[:i]))) for i in range(1, 30)}
    start = 4
    stop = full[start : start + 6]
    assert any(start < b < start + len(stop) for b in boundaries), "stop must span tokens"

    out, stopped = run(tiny_chat, prompt, max_tokens=30, stop=["never-there", stop])
    assert out == full[: full.index(stop)]
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < 30


def test_same_seed_gives_same_text_and_other_seed_differs(tiny_chat):
    prompt = chat_tokens(tiny_chat, LONG_PROMPT)
    params = SamplingParams(temperature=1.0, top_k=50, seed=7)
    first, _ = run(tiny_chat, prompt, params, max_tokens=20)
    again, _ = run(tiny_chat, prompt, params, max_tokens=20)
    other, _ = run(tiny_chat, prompt, SamplingParams(temperature=1.0, top_k=50, seed=8),
                   max_tokens=20)
    assert first == again
    assert first != other


def test_repetition_penalty_changes_greedy_output(tiny_chat):
    prompt = chat_tokens(tiny_chat, "Write a poem")
    plain, _ = run(tiny_chat, prompt, max_tokens=20)
    penalised, _ = run(tiny_chat, prompt, SamplingParams(repetition_penalty=1.5), max_tokens=20)
    assert plain != penalised


def test_quantized_model_generates(tiny_chat_4bit):
    assert "quantization" in tiny_chat_4bit.config
    _, done = run(tiny_chat_4bit, chat_tokens(tiny_chat_4bit, LONG_PROMPT), max_tokens=10)
    assert done.completion_tokens >= 1
    assert done.finish_reason in ("stop", "length")


def test_timings_are_reported(tiny_chat):
    _, done = run(tiny_chat, chat_tokens(tiny_chat, LONG_PROMPT), max_tokens=10)
    assert 0 < done.ttft_s <= done.generation_s
    assert done.tokens_per_s > 0


def test_max_tokens_is_clamped_to_the_context(tiny_chat):
    budget = plan_max_tokens(2048, 48, 5000)
    assert (budget.max_tokens, budget.clamped) == (2000, True)
    assert plan_max_tokens(2048, 48).max_tokens == 2000
    assert plan_max_tokens(None, 48, 10).max_tokens == 10
    with pytest.raises(ValidationError):
        plan_max_tokens(16, 16)
    with pytest.raises(ValidationError):
        plan_max_tokens(2048, 1, 0)


def test_invalid_sampling_values_are_rejected():
    with pytest.raises(ValidationError):
        SamplingParams(temperature=-1)
    with pytest.raises(ValidationError):
        SamplingParams(top_p=0)


@pytest.mark.parametrize(
    "bad",
    [{"seed": -1}, {"seed": MAX_SEED + 1}, {"seed": 1.5}, {"seed": True},
     {"temperature": float("nan")}, {"temperature": float("inf")},
     {"top_p": float("nan")}, {"min_p": float("nan")},
     {"repetition_penalty": float("inf")}, {"presence_penalty": float("nan")},
     {"frequency_penalty": float("-inf")}, {"logit_bias": {3: float("nan")}}],
)
def test_out_of_range_seeds_and_non_finite_floats_are_validation_errors(bad):
    with pytest.raises(ValidationError) as info:
        SamplingParams(**bad)
    assert isinstance(info.value, ValueError)  # what the server maps to a 400
    assert "\n" not in info.value.message


@pytest.mark.parametrize("seed", [0, MAX_SEED])
def test_seeds_at_both_ends_of_the_range_generate(tiny_chat, seed):
    params = SamplingParams(temperature=1.0, seed=seed)
    _, done = run(tiny_chat, chat_tokens(tiny_chat, LONG_PROMPT), params, max_tokens=3)
    assert done.completion_tokens == 3


def test_special_tokens_the_model_emits_are_removed_from_the_text(tiny_chat):
    start = tiny_chat.tokenizer.get_vocab()["<|im_start|>"]
    params = SamplingParams(logit_bias={start: 1e4})
    out, done = run(tiny_chat, chat_tokens(tiny_chat, LONG_PROMPT), params, max_tokens=5)
    assert done.token_ids == (start,) * 5
    assert out == ""


def test_reasoning_labels_can_be_switched_off(tiny_chat):
    events = list(generate(tiny_chat, chat_tokens(tiny_chat, LONG_PROMPT), SamplingParams(),
                           max_tokens=5, reasoning=False))
    assert [e for e in events if isinstance(e, Delta) and e.reasoning] == []
