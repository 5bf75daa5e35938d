"""One request's failure stays in its own row: the rest of the batch decodes on, unchanged.

Faults enter through real hooks on the real tiny model: a sampler builder whose
sampler fails for one request, a logits processor that fails for another, and a
tokenizer whose detokenizer fails on one token that only the third request produces.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mlxk2.engine.batch import GenerationRequest, ModelBatch
from mlxk2.engine.chat import build_prompt_tokens
from mlxk2.engine.events import Aborted, Delta, Event, Finished
from mlxk2.engine.generate import run_request
from mlxk2.engine.sampling import SamplingParams, make_logits_processors, make_sampler
from mlxk2.errors import GenerationFailedError
from tests.fixtures.faults import POISON_TOKEN, PoisonedTokenizer

#: Seeds that mark the requests whose sampler / logits processor fail (at their 4th call).
SAMPLER_FAULT_SEED = 9001
PROCESSOR_FAULT_SEED = 9002
FAULT_AFTER_CALLS = 3


def _fails_after(calls: int, real: Any, what: str) -> Any:
    seen = 0

    def call(*args: Any) -> Any:
        nonlocal seen
        seen += 1
        if seen > calls:
            raise RuntimeError(f"injected {what} fault")
        return real(*args)

    return call


def faulty_sampler(p: SamplingParams) -> Any:
    real = make_sampler(p)
    return _fails_after(FAULT_AFTER_CALLS, real, "sampler") if p.seed == SAMPLER_FAULT_SEED \
        else real


def faulty_processors(p: SamplingParams) -> list[Any]:
    processors = make_logits_processors(p)
    if p.seed == PROCESSOR_FAULT_SEED:
        processors.append(_fails_after(FAULT_AFTER_CALLS, lambda _tokens, logits: logits,
                                       "logits processor"))
    return processors


def _request(loaded: Any, text: str, sampling: SamplingParams, max_tokens: int = 24,
             stops: tuple[str, ...] = ()) -> GenerationRequest:
    prompt = build_prompt_tokens(loaded.tokenizer, [{"role": "user", "content": text}])
    return GenerationRequest(prompt, max_tokens, sampling, stops=stops)


def _run_together(batch: ModelBatch, requests: list[GenerationRequest]) -> list[list[Event]]:
    streams: list[list[Event]] = [[] for _ in requests]
    for stream, request in zip(streams, requests, strict=True):
        batch.add(request, stream.append)
    while batch.busy:
        batch.step()
    return streams


def _outcome(events: list[Event]) -> tuple[str, Event]:
    text = "".join(e.content + e.reasoning for e in events if isinstance(e, Delta))
    return text, events[-1]


def test_rows_failing_at_sampling_processing_and_detokenizing_leave_the_others_intact(tiny_chat):
    loaded = dataclasses.replace(tiny_chat, tokenizer=PoisonedTokenizer(tiny_chat.tokenizer))
    away = {POISON_TOKEN: -100.0}
    healthy = [
        _request(loaded, "Tell me about the weather.", SamplingParams(logit_bias=away)),
        _request(loaded, "What is a river?", SamplingParams(logit_bias=away), stops=(" the",)),
        _request(loaded, "Hello!", SamplingParams(temperature=0.8, seed=3, logit_bias=away)),
        _request(loaded, "List three colours.",
                 SamplingParams(repetition_penalty=1.3, logit_bias=away), max_tokens=30),
        _request(loaded, "Describe a town.",
                 SamplingParams(temperature=0.7, top_k=10_000, seed=4, logit_bias=away)),
    ]
    faulty = {
        "sampling": _request(loaded, "Why do birds sing?", SamplingParams(
            temperature=0.9, seed=SAMPLER_FAULT_SEED, logit_bias=away)),
        "logits_processor": _request(loaded, "How are you?", SamplingParams(
            seed=PROCESSOR_FAULT_SEED, logit_bias=away)),
        "detokenizing": _request(loaded, "Write a line.", SamplingParams(
            logit_bias={POISON_TOKEN: 100.0})),
    }

    def new_batch(max_batch: int) -> ModelBatch:
        return ModelBatch(loaded, max_batch=max_batch, prompt_cache=0,
                          make_sampler=faulty_sampler, make_processors=faulty_processors)

    solo_batch = new_batch(1)
    solo = [_outcome(list(run_request(solo_batch, r))) for r in healthy]
    solo_batch.close()

    # Faulty requests are interleaved with healthy ones, so failing rows sit mid-batch.
    order = [healthy[0], faulty["sampling"], healthy[1], faulty["logits_processor"],
             healthy[2], faulty["detokenizing"], healthy[3], healthy[4]]
    batch = new_batch(len(order))
    streams = dict(zip(map(id, order), _run_together(batch, order), strict=True))
    batch.close()

    for request, alone in zip(healthy, solo, strict=True):
        text, last = _outcome(streams[id(request)])
        assert isinstance(last, Finished)
        assert (text, last.token_ids) == (alone[0], alone[1].token_ids)  # type: ignore[union-attr]
    for stage, request in faulty.items():
        events = streams[id(request)]
        last = events[-1]
        assert isinstance(last, Aborted), stage
        assert isinstance(last.error, GenerationFailedError)
        assert last.error.stage == stage
        assert "other requests were not affected" in last.error.message
        assert sum(isinstance(e, Aborted) for e in events) == 1
        assert not any(isinstance(e, Finished) for e in events)
    # The sampler and processor faults struck mid-answer, after some text was out.
    assert any(isinstance(e, Delta) for e in streams[id(faulty["sampling"])])


def test_a_top_k_covering_the_vocabulary_samples_like_no_top_k(tiny_chat):
    prompt = build_prompt_tokens(tiny_chat.tokenizer, [{"role": "user", "content": "Hi"}])
    vocab = len(tiny_chat.tokenizer)

    def answer(top_k: int) -> tuple[int, ...]:
        request = GenerationRequest(prompt, 16, SamplingParams(temperature=1.0, seed=5,
                                                               top_k=top_k))
        batch = ModelBatch(tiny_chat, max_batch=1, prompt_cache=0)
        try:
            *_, done = run_request(batch, request)
        finally:
            batch.close()
        assert isinstance(done, Finished)
        return done.token_ids

    unfiltered = answer(0)
    assert answer(vocab) == unfiltered
    assert answer(10**9) == unfiltered
    assert answer(2) != unfiltered  # the filter itself still works below the vocabulary


def test_a_failing_choice_ends_its_request_once_and_spares_grammar_rows_beside_it(tiny_chat):
    import json

    from mlxk2.engine.constraints import ConstraintSpec

    free = _request(tiny_chat, "What is a river?", SamplingParams())
    constrained = dataclasses.replace(
        _request(tiny_chat, "Give me JSON.", SamplingParams(), max_tokens=60),
        constraint=ConstraintSpec.json_schema({
            "type": "object", "properties": {"size": {"enum": ["small", "large"]}},
            "required": ["size"]}),
        split_reasoning=False)
    # Choice c is seeded with seed + c: choice 1 carries the faulty seed. Its end
    # tokens are biased away, so that it is still decoding when the fault strikes.
    no_end = {token: -100.0 for token in tiny_chat.stop_token_ids}
    forked = dataclasses.replace(_request(tiny_chat, "How are you?", SamplingParams(
        temperature=0.8, seed=PROCESSOR_FAULT_SEED - 1, logit_bias=no_end)), n=3)

    def new_batch(max_batch: int) -> ModelBatch:
        return ModelBatch(tiny_chat, max_batch=max_batch, prompt_cache=0,
                          make_processors=faulty_processors)

    solo_batch = new_batch(1)
    alone = [_outcome(list(run_request(solo_batch, r))) for r in (free, constrained)]
    solo_batch.close()
    batch = new_batch(8)
    free_events, constrained_events, forked_events = _run_together(
        batch, [free, constrained, forked])
    assert not batch.busy
    batch.close()

    for events, (text, done) in zip((free_events, constrained_events), alone, strict=True):
        got_text, last = _outcome(events)
        assert isinstance(last, Finished)
        assert (got_text, last.token_ids) == (text, done.token_ids)  # type: ignore[union-attr]
    assert json.loads(_outcome(constrained_events)[0])["size"] in ("small", "large")
    aborted = [e for e in forked_events if isinstance(e, Aborted)]
    assert len(aborted) == 1 and forked_events[-1] is aborted[0]  # nothing after it
    assert isinstance(aborted[0].error, GenerationFailedError)
    assert aborted[0].error.stage == "logits_processor"
    assert not any(isinstance(e, Finished) and e.choice == 1 for e in forked_events)
