"""A request's first token costs the batch no more model work than mlx-lm's ``stream_generate``.

Both run the same three forward passes before the first token is out: the
prompt but its last token, the last prompt token (whose logits give the first
token), and the look-ahead step that starts on the second token before the
first is returned. ``BatchGenerator`` spreads them over three ``next()`` calls,
so :class:`ModelBatch` hands out the first token from its third step; the first
two steps produce nothing because there is nothing yet to produce, not because
a token waits a step. The forward passes are counted on the real tiny model,
through a wrapper that only records each call's input shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mlxk2.engine.batch import GenerationRequest, ModelBatch
from mlxk2.engine.chat import build_prompt_tokens
from mlxk2.engine.events import Event, Finished
from mlxk2.engine.sampling import SamplingParams

Shape = tuple[int, ...]


class CountingModel:
    """The real model, with the input shape of each forward pass recorded."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.calls: list[Shape] = []

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(tuple(inputs.shape))
        return self._model(inputs, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _prompt(loaded: Any) -> list[int]:
    return build_prompt_tokens(loaded.tokenizer, [{"role": "user", "content": "Tell me a story."}])


def _stream_generate_first_token(loaded: Any, prompt: list[int]) -> tuple[int, list[Shape]]:
    import mlx.core as mx
    from mlx_lm import stream_generate

    counting = CountingModel(loaded.model)
    response = next(iter(stream_generate(counting, loaded.tokenizer, mx.array(prompt),
                                         max_tokens=1)))
    return response.token, counting.calls


def _steps_until(batch: ModelBatch, counting: CountingModel,
                 events: list[Event]) -> list[list[Shape]]:
    """Step ``batch`` until ``events`` has one; the forward passes of each step."""
    calls_per_step = []
    while not events:
        seen = len(counting.calls)
        batch.step()
        calls_per_step.append(counting.calls[seen:])
    return calls_per_step


def test_first_token_takes_the_same_forward_passes_as_stream_generate(tiny_chat):
    prompt = _prompt(tiny_chat)
    raw_token, raw_calls = _stream_generate_first_token(tiny_chat, prompt)
    assert raw_calls == [(1, len(prompt) - 1), (1, 1), (1, 1)]

    counting = CountingModel(tiny_chat.model)
    batch = ModelBatch(dataclasses.replace(tiny_chat, model=counting), max_batch=1,
                       prompt_cache=0)
    events: list[Event] = []
    # One token: the request ends in the step that hands out its first token.
    batch.add(GenerationRequest(prompt, 1, SamplingParams()), events.append)
    try:
        calls_per_step = _steps_until(batch, counting, events)
    finally:
        batch.close()

    assert calls_per_step == [[(1, len(prompt) - 1)], [(1, 1)], [(1, 1)]]
    assert [shape for step in calls_per_step for shape in step] == raw_calls
    done = events[-1]
    assert isinstance(done, Finished)
    assert done.token_ids == (raw_token,)


def test_a_request_joining_a_running_batch_gets_its_first_token_from_the_first_shared_step(
        tiny_chat):
    counting = CountingModel(tiny_chat.model)
    batch = ModelBatch(dataclasses.replace(tiny_chat, model=counting), max_batch=2,
                       prompt_cache=0)
    no_stop = SamplingParams(logit_bias={i: -1e9 for i in tiny_chat.stop_token_ids})
    running: list[Event] = []
    batch.add(GenerationRequest(_prompt(tiny_chat), 32, no_stop), running.append)
    joining: list[Event] = []
    prompt = build_prompt_tokens(tiny_chat.tokenizer, [{"role": "user", "content": "Hi!"}])
    try:
        for _ in range(3):  # up to the running row's first token
            batch.step()
        batch.add(GenerationRequest(prompt, 1, SamplingParams()), joining.append)
        calls_per_step = _steps_until(batch, counting, joining)
    finally:
        batch.close()

    # Each step decodes the running row first; the newcomer's prompt, then its last
    # prompt token, run beside it; the third step decodes both rows at once.
    assert calls_per_step == [[(1, 1), (1, len(prompt) - 1)], [(1, 1), (1, 1)], [(2, 1)]]
    assert isinstance(joining[-1], Finished) and joining[-1].completion_tokens == 1
    assert not any(isinstance(e, Finished) for e in running)
