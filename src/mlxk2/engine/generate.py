"""Generation as a stream of typed events, built on ``mlx_lm.stream_generate``.

``run``, ``serve`` and the tests all read the same events: :class:`TextChunk`
pieces as they are decided, then one :class:`Finished` with exact token counts
and timings. Special tokens never reach the text: stop tokens end generation
inside mlx-lm, other special tokens are removed, user stop strings are cut, and
reasoning is labelled apart from the answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass

from mlxk2.engine.chat import opens_reasoning
from mlxk2.engine.load import LoadedModel
from mlxk2.engine.reasoning import CONTENT, ReasoningParser
from mlxk2.engine.sampling import SamplingParams, make_logits_processors, make_sampler
from mlxk2.engine.stops import StopMatcher
from mlxk2.errors import ValidationError

#: Used when a model's config states no context length.
FALLBACK_MAX_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class TextChunk:
    """Decided text; ``kind`` is ``"content"`` (the answer) or ``"reasoning"``."""

    text: str
    kind: str = CONTENT


@dataclass(frozen=True)
class Finished:
    """The last event of a generation.

    ``finish_reason`` is ``"stop"`` (a stop token or stop string) or
    ``"length"`` (``max_tokens`` reached). ``completion_tokens`` counts every
    token the model produced, including a final stop token, and ``token_ids``
    lists them. ``ttft_s`` runs from the call to the first token;
    ``tokens_per_s`` is mlx-lm's decode rate; ``generation_s`` the whole call.
    """

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    load_s: float
    ttft_s: float
    tokens_per_s: float
    generation_s: float = 0.0
    token_ids: tuple[int, ...] = ()


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
) -> Iterator[TextChunk | Finished]:
    """Generate a reply to ``prompt_tokens``.

    Args:
        loaded: The model from :func:`mlxk2.engine.load.load_model`.
        prompt_tokens: The full prompt, e.g. from :func:`mlxk2.engine.chat.build_prompt_tokens`.
        params: Sampling settings; with ``params.seed`` the sampler draws from its
            own random stream started from that seed.
        max_tokens: Token limit; defaults to what the context leaves and is
            clamped to it (use :func:`plan_max_tokens` to learn about clamping).
        stop: Stop strings; the text ends before the earliest one.
        reasoning: Label ``<think>`` / analysis-channel text as ``"reasoning"``;
            when False every chunk is ``"content"``.

    Yields:
        :class:`TextChunk` events, then exactly one :class:`Finished`.

    Raises:
        ValidationError: an empty prompt, or one that fills the context.
    """
    started = time.perf_counter()
    import mlx.core as mx
    from mlx_lm.generate import stream_generate

    prompt = list(prompt_tokens)
    if not prompt:
        raise ValidationError("The prompt has no tokens")
    budget = plan_max_tokens(loaded.context_length, len(prompt), max_tokens)
    matcher = StopMatcher(stop)
    parser = ReasoningParser(
        start_in_reasoning=reasoning and opens_reasoning(loaded.tokenizer, prompt)
    )

    def label(text: str) -> list[TextChunk]:
        if not text:
            return []
        if not reasoning:
            return [TextChunk(text)]
        return [TextChunk(piece, kind) for kind, piece in parser.feed(text)]

    first_at: float | None = None
    finish_reason = "length"
    produced: list[int] = []
    tokens_per_s = 0.0
    stream = stream_generate(
        loaded.model,
        loaded.tokenizer,
        mx.array(prompt),
        max_tokens=budget.max_tokens,
        sampler=make_sampler(params),
        logits_processors=make_logits_processors(params),
    )
    with closing(stream):
        for response in stream:
            if first_at is None:
                first_at = time.perf_counter()
            produced.append(response.token)
            tokens_per_s = response.generation_tps
            text = response.text
            if response.token in loaded.hidden_tokens:
                text = text.replace(loaded.hidden_tokens[response.token], "")
            safe, hit = matcher.feed(text)
            yield from label(safe)
            if hit:
                finish_reason = "stop"
                break
            if response.finish_reason is not None:
                finish_reason = response.finish_reason
    yield from label(matcher.flush())
    if reasoning:
        for kind, piece in parser.flush():
            yield TextChunk(piece, kind)
    ended = time.perf_counter()
    yield Finished(
        finish_reason=finish_reason,
        prompt_tokens=len(prompt),
        completion_tokens=len(produced),
        load_s=loaded.load_s,
        ttft_s=(first_at or ended) - started,
        tokens_per_s=tokens_per_s,
        generation_s=ended - started,
        token_ids=tuple(produced),
    )
