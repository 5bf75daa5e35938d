"""The per-request text pipeline: detokenizing, stop strings, reasoning, exact counts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mlxk2.engine.load import hidden_special_tokens, stop_token_ids
from mlxk2.engine.sampling import SamplingParams
from mlxk2.server.scheduler import Delta, GenerationRequest, RequestText


@pytest.fixture(scope="module")
def loaded_tokenizer(chat_tokenizer: Any) -> Any:
    """The parts of a loaded model the text pipeline reads, built by the engine's helpers."""
    stops = stop_token_ids(chat_tokenizer)
    return SimpleNamespace(tokenizer=chat_tokenizer, stop_token_ids=stops,
                           hidden_tokens=hidden_special_tokens(chat_tokenizer, stops))


def _run(loaded: Any, text: str, last: str | None = "length", **options: Any
         ) -> tuple[str, str, str | None, int]:
    request = GenerationRequest([1, 2, 3], 100, SamplingParams(), **options)
    pipeline = RequestText(request, loaded)
    tokens = loaded.tokenizer.encode(text, add_special_tokens=False)
    content, reasoning, reason = [], [], None
    for i, token in enumerate(tokens):
        delta, reason = pipeline.push(token, last if i == len(tokens) - 1 else None)
        if isinstance(delta, Delta):
            content.append(delta.content)
            reasoning.append(delta.reasoning)
        if reason is not None:
            break
    return "".join(content), "".join(reasoning), reason, pipeline.generated


def test_reasoning_is_separated_from_content(loaded_tokenizer):
    content, reasoning, reason, _ = _run(loaded_tokenizer,
                                         "<think>plan the reply</think>The answer is here.")
    assert reasoning == "plan the reply"
    assert content == "The answer is here."
    assert reason == "length"


def test_raw_completions_keep_think_tags_as_text(loaded_tokenizer):
    text = "<think>plan</think>done"
    content, reasoning, _, _ = _run(loaded_tokenizer, text, split_reasoning=False)
    assert (content, reasoning) == (text, "")


def test_multi_token_stop_string_ends_the_request_early(loaded_tokenizer):
    text = "The weather is nice today and tomorrow."
    content, _, reason, generated = _run(loaded_tokenizer, text, stops=("nice today",))
    assert content == "The weather is "
    assert reason == "stop"
    assert generated < len(loaded_tokenizer.tokenizer.encode(text, add_special_tokens=False))


def test_end_of_sequence_token_counts_but_never_shows(loaded_tokenizer):
    request = GenerationRequest([1], 10, SamplingParams())
    pipeline = RequestText(request, loaded_tokenizer)
    hello = loaded_tokenizer.tokenizer.encode("Hello", add_special_tokens=False)
    eos = loaded_tokenizer.tokenizer.convert_tokens_to_ids("<|im_end|>")
    shown = [pipeline.push(t, None)[0] for t in hello]
    delta, reason = pipeline.push(eos, "stop")
    text = "".join(d.content for d in [*shown, delta] if d is not None)
    assert text == "Hello"
    assert reason == "stop"
    assert pipeline.finish(reason).completion_tokens == len(hello) + 1


def test_other_special_tokens_are_hidden(loaded_tokenizer):
    start = loaded_tokenizer.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert start in loaded_tokenizer.hidden_tokens
    pipeline = RequestText(GenerationRequest([1], 10, SamplingParams()), loaded_tokenizer)
    delta, _ = pipeline.push(start, None)
    tail, reason = pipeline.push(loaded_tokenizer.tokenizer.encode("ok")[0], "length")
    text = "".join(d.content for d in (delta, tail) if d is not None)
    assert "<|im_start|>" not in text
    assert reason == "length"
