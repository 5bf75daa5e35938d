"""The per-request token pipeline on the real tiny model: text, stops, reasoning, counts."""

from __future__ import annotations

from typing import Any

from mlxk2.engine.batch import GenerationRequest
from mlxk2.engine.events import Delta, Finished
from mlxk2.engine.pipeline import Token, TokenPipeline
from mlxk2.engine.sampling import SamplingParams


def _ids(loaded: Any, text: str) -> list[int]:
    return list(loaded.tokenizer.encode(text, add_special_tokens=False))


def _feed(loaded: Any, tokens: list[int], last: str | None = "length", cached: int = 0,
          **options: Any) -> tuple[str, str, Finished | None, TokenPipeline]:
    """Push ``tokens`` (the last one with the engine verdict ``last``) until the request ends."""
    pipeline = TokenPipeline(loaded, GenerationRequest([1, 2, 3], 100, SamplingParams(),
                                                       **options), cached)
    content, reasoning = [], []
    for i, token in enumerate(tokens):
        for event in pipeline.push(Token(token, last if i == len(tokens) - 1 else None)):
            if isinstance(event, Delta):
                content.append(event.content)
                reasoning.append(event.reasoning)
        if pipeline.finished is not None:
            break
    return "".join(content), "".join(reasoning), pipeline.finished, pipeline


def _run(loaded: Any, text: str, last: str | None = "length", **options: Any
         ) -> tuple[str, str, str | None, int]:
    content, reasoning, done, pipeline = _feed(loaded, _ids(loaded, text), last, **options)
    return content, reasoning, done and done.finish_reason, pipeline.completion_tokens


def test_reasoning_is_separated_from_content(tiny_chat):
    content, reasoning, reason, _ = _run(tiny_chat,
                                         "<think>plan the reply</think>The answer is here.")
    assert reasoning == "plan the reply"
    assert content == "The answer is here."
    assert reason == "length"


def test_a_prompt_that_opened_think_makes_the_first_words_reasoning(tiny_chat):
    content, reasoning, _, _ = _run(tiny_chat, "plan</think>answer", start_in_reasoning=True)
    assert (content, reasoning) == ("answer", "plan")


def test_raw_completions_keep_think_tags_as_text(tiny_chat):
    text = "<think>plan</think>done"
    content, reasoning, _, _ = _run(tiny_chat, text, split_reasoning=False)
    assert (content, reasoning) == (text, "")


def test_multi_token_stop_string_ends_the_request_early(tiny_chat):
    text = "The weather is nice today and tomorrow."
    content, _, reason, generated = _run(tiny_chat, text, stops=("nice today",))
    assert content == "The weather is "
    assert reason == "stop"
    assert generated < len(_ids(tiny_chat, text))


def test_stop_string_spanning_tokens_is_held_back_until_decided(tiny_chat):
    pipeline = TokenPipeline(tiny_chat, GenerationRequest([1], 10, SamplingParams(),
                                                          stops=("cat!",)))
    shown = []
    for token in _ids(tiny_chat, "a cat"):
        shown += [e.content for e in pipeline.push(Token(token)) if isinstance(e, Delta)]
    assert "".join(shown) == "a "  # "cat" could still become the stop string
    tail = pipeline.push(Token(_ids(tiny_chat, ".")[0], "length"))
    assert [e.content for e in tail if isinstance(e, Delta)] == ["cat."]


def test_end_of_sequence_token_counts_but_never_shows(tiny_chat):
    hello = _ids(tiny_chat, "Hello")
    eos = tiny_chat.tokenizer.convert_tokens_to_ids("<|im_end|>")
    content, _, done, _ = _feed(tiny_chat, [*hello, eos], last="stop")
    assert content == "Hello"
    assert done is not None and done.finish_reason == "stop"
    assert done.completion_tokens == len(hello) + 1
    assert done.token_ids == (*hello, eos)


def test_other_special_tokens_are_hidden(tiny_chat):
    start = tiny_chat.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert start in tiny_chat.hidden_tokens
    content, _, done, _ = _feed(tiny_chat, [start, *_ids(tiny_chat, "ok"), start])
    assert content == "ok"
    assert done is not None and done.completion_tokens == 4


def test_finished_reports_exact_counts_and_ordered_timings(tiny_chat):
    tokens = _ids(tiny_chat, "one two three")
    _, _, done, pipeline = _feed(tiny_chat, tokens, cached=2)
    assert done is not None
    assert (done.prompt_tokens, done.completion_tokens, done.cached_tokens) == (3, len(tokens), 2)
    assert done.token_ids == tuple(tokens)
    assert 0 <= done.ttft_s <= done.generation_s
    assert done.decode_s <= done.generation_s
    assert done.load_s == tiny_chat.load_s
    assert pipeline.push(Token(tokens[0])) == []  # nothing after the end
