"""Generation for one caller at a time, through the same core ``serve`` uses.

:func:`generate` adds a request to a :class:`~mlxk2.engine.batch.ModelBatch` and
steps it until the request ends, yielding its :mod:`mlxk2.engine.events`: the
one path from tokens to text that ``run``, ``serve`` and the tests share. Stop
tokens end generation, other special tokens are hidden, user stop strings are
cut, and reasoning is reported apart from the answer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from mlxk2.engine.batch import GenerationRequest, ModelBatch
from mlxk2.engine.chat import opens_reasoning
from mlxk2.engine.constraints import ConstraintSpec
from mlxk2.engine.events import Aborted, Event, Finished
from mlxk2.engine.load import LoadedModel
from mlxk2.engine.sampling import SamplingParams
from mlxk2.engine.tools import ToolCalling
from mlxk2.errors import ValidationError

#: Used when a model's config states no context length.
FALLBACK_MAX_TOKENS = 4096


@dataclass(frozen=True)
class TokenBudget:
    """How many tokens may be generated, and whether a request was cut to fit."""

    max_tokens: int
    requested: int | None
    clamped: bool


def plan_max_tokens(
    context: int | None, prompt_tokens: int, requested: int | None = None
) -> TokenBudget:
    """Fit ``requested`` (default: the whole context) so prompt + reply ≤ context.

    Raises:
        ValidationError: ``requested`` is below 1, or the prompt fills the context.
    """
    if requested is not None and requested < 1:
        raise ValidationError(f"max tokens must be at least 1, got {requested}")
    if context is None:
        return TokenBudget(requested or FALLBACK_MAX_TOKENS, requested, False)
    room = context - prompt_tokens
    if room < 1:
        raise ValidationError(
            f"Prompt has {prompt_tokens} tokens; the model's context holds {context}"
        )
    if requested is None:
        return TokenBudget(room, None, False)
    return TokenBudget(min(requested, room), requested, requested > room)


def generate(
    loaded: LoadedModel,
    prompt_tokens: Sequence[int],
    params: SamplingParams,
    *,
    max_tokens: int | None = None,
    stop: Sequence[str] = (),
    reasoning: bool = True,
    constraint: ConstraintSpec | None = None,
    tools: ToolCalling | None = None,
    top_logprobs: int | None = None,
    batch: ModelBatch | None = None,
) -> Iterator[Event]:
    """Generate a reply to ``prompt_tokens``.

    Args:
        loaded: The model from :func:`mlxk2.engine.load.load_model`.
        prompt_tokens: The full prompt, e.g. from :func:`mlxk2.engine.chat.build_prompt_tokens`.
        params: Sampling settings; with ``params.seed`` the sampler draws from its
            own random stream started from that seed.
        max_tokens: Token limit; defaults to what the context leaves and is
            clamped to it (use :func:`plan_max_tokens` to learn about clamping).
        stop: Stop strings; the text ends before the earliest one.
        reasoning: Report ``<think>`` / analysis-channel text as ``Delta.reasoning``;
            when False all text is content. A constraint turns it off: the
            grammar covers the whole reply.
        constraint: A grammar the reply must match (see :mod:`mlxk2.engine.constraints`).
        tools: How to read tool calls from the reply (see :mod:`mlxk2.engine.tools`).
        top_logprobs: Report log-probabilities with this many alternatives (0..20).
        batch: The batch to run in, kept by a caller with several requests in a
            row (a chat) so its prompt cache reuses earlier ones; by default a
            private one, closed at the end.

    Returns:
        :class:`~mlxk2.engine.events.Delta` events, then exactly one
        :class:`~mlxk2.engine.events.Finished`. Closing the iterator early
        cancels the request.

    Raises:
        ValidationError: an empty prompt, or one that fills the context.
        ConstraintError: a constraint that does not compile.
    """
    prompt = list(prompt_tokens)
    if not prompt:
        raise ValidationError("The prompt has no tokens")
    budget = plan_max_tokens(loaded.context_length, len(prompt), max_tokens)
    if constraint is not None:
        from mlxk2.engine.constraints import compiler_for

        compiler_for(loaded).check(constraint)
        reasoning = False
    request = GenerationRequest(
        prompt_tokens=prompt,
        max_tokens=budget.max_tokens,
        sampling=params,
        stops=tuple(stop),
        split_reasoning=reasoning,
        start_in_reasoning=reasoning and opens_reasoning(loaded.tokenizer, prompt),
        constraint=constraint,
        tools=tools,
        top_logprobs=top_logprobs,
    )
    if batch is not None:
        return run_request(batch, request)
    return _in_private_batch(loaded, request)


def run_request(batch: ModelBatch, request: GenerationRequest) -> Iterator[Event]:
    """Add ``request`` to ``batch`` and step the batch until the request ends.

    Yields:
        The request's events as each step decides them, the final one last
        (with ``n`` choices, after each choice's :class:`Finished`).
    """
    pending: deque[Event] = deque()
    uid = batch.add(request, pending.append)
    over = False
    unfinished = request.n
    try:
        while not over:
            batch.step()
            while pending and not over:
                event = pending.popleft()
                unfinished -= isinstance(event, Finished)
                over = unfinished == 0 or isinstance(event, Aborted)
                yield event
    finally:
        if not over:
            batch.cancel(uid)


def _in_private_batch(loaded: LoadedModel, request: GenerationRequest) -> Iterator[Event]:
    batch = ModelBatch(loaded, max_batch=1, prompt_cache=0)
    try:
        yield from run_request(batch, request)
    finally:
        batch.close()
