"""One request's way from sampled tokens to events: the single token-to-event path.

:class:`TokenPipeline` is fed every token the generator samples for a request
and returns the :mod:`mlxk2.engine.events` they decide. It owns a fresh streaming
detokenizer, hides special tokens, cuts at stop strings, splits reasoning from
the answer, finds tool calls in the answer and streams their arguments
(:class:`~mlxk2.engine.tools.ToolCallScanner`),
reports log-probabilities when asked, and keeps exact token counts and timings.
``run`` and ``serve`` both reach it through :class:`mlxk2.engine.batch.ModelBatch`,
so each behaviour is implemented here once. Per-token extras (log-probabilities) travel in the
:class:`Token` record; a grammar acts earlier, on the logits (see
:mod:`mlxk2.engine.constraints`).

Why not mlx-lm's ``TextStateMachine``: mlx-lm 0.32 ships a character-level
Aho-Corasick machine that strips markers and holds back partial matches, which
covers what :class:`~mlxk2.engine.stops.StopMatcher` and the ``<think>`` part of
:class:`~mlxk2.engine.reasoning.ReasoningParser` do. It cannot replace either
without changing behaviour: it acts on the stop string that *completes* first,
while the stream must end before the one that *starts* first (stops ``abcd`` and
``c`` over ``abcd`` give ``ab`` instead of nothing); its transitions are fixed
strings, while a gpt-oss channel header (``<|channel|>analysis<|message|>``, or
``commentary to=… <|constrain|>json``) chooses the next state from free text
between two markers; and it does not trim the whitespace a template puts after
an opening marker. Ours stay; each is a small, separately tested class.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlxk2.engine.events import Delta, Event, Finished, TokenLogprob, ToolCallEvent
from mlxk2.engine.reasoning import CONTENT, REASONING, ReasoningParser
from mlxk2.engine.stops import StopMatcher

if TYPE_CHECKING:
    from mlxk2.engine.batch import GenerationRequest
    from mlxk2.engine.load import LoadedModel


@dataclass(frozen=True, slots=True)
class Token:
    """One sampled token as the generator reports it.

    ``engine_finish`` is the generator's verdict on this token: ``"stop"`` (a stop
    token, counted but never shown), ``"length"`` (the limit) or None.
    ``logprobs`` is the row's log-probabilities over the vocabulary (an MLX
    array), for consumers that report or constrain on them.
    """

    id: int
    engine_finish: str | None = None
    logprobs: Any = None


class TokenPipeline:
    """Tokens in, events out, for one request. Not thread-safe; one per request.

    Args:
        loaded: The model; its tokenizer, hidden special tokens and load time are read.
        request: The request's stop strings, reasoning, tool and logprob settings.
        cached_tokens: Prompt tokens reused from the prompt cache (for the usage report).
        choice: Which of the request's ``n`` choices this is; stamped on its events.
    """

    def __init__(self, loaded: LoadedModel, request: GenerationRequest,
                 cached_tokens: int = 0, choice: int = 0) -> None:
        self._started = time.perf_counter()
        self._prompt_tokens = len(request.prompt_tokens)
        self._cached_tokens = cached_tokens
        self._load_s = loaded.load_s
        self._choice = choice
        self._hidden = loaded.hidden_tokens
        self._tools = None
        if request.tools is not None:
            from mlxk2.engine.tools import ToolCallScanner

            self._tools = ToolCallScanner(request.tools, choice)
            markers = (request.tools.start, request.tools.end)
            self._hidden = {i: t for i, t in self._hidden.items() if t not in markers}
        self._top_logprobs = request.top_logprobs
        self._vocab: Any = None
        if request.top_logprobs is not None:
            from mlxk2.engine.constraints import compiler_for

            self._vocab = compiler_for(loaded)
        self._logprobs: list[TokenLogprob] = []
        self._detokenizer = loaded.tokenizer.detokenizer  # a fresh copy on each access
        self._stops = StopMatcher(request.stops)
        self._reasoning = (
            ReasoningParser(start_in_reasoning=request.start_in_reasoning)
            if request.split_reasoning else None
        )
        self._token_ids: list[int] = []
        self._first_at: float | None = None
        self._last_at: float | None = None
        self.finished: Finished | None = None

    @property
    def completion_tokens(self) -> int:
        """Tokens taken so far, stop tokens included."""
        return len(self._token_ids)

    def push(self, token: Token) -> list[Event]:
        """Take one sampled token.

        Returns:
            The events it decides: a :class:`Delta` when text is ready, then the
            tool-call events it completes (a call's start, argument pieces, the
            whole call), then a :class:`Finished` once the request is over (a
            stop string ends it even when the generator would go on). Nothing
            after the request is over.
        """
        if self.finished is not None:
            return []
        self._last_at = time.perf_counter()
        if self._first_at is None:
            self._first_at = self._last_at
        self._token_ids.append(token.id)
        hit_stop_token = token.engine_finish == "stop"
        if self._vocab is not None and not hit_stop_token:
            self._logprobs.append(self._logprob(token))
        if not hit_stop_token and token.id not in self._hidden:
            self._detokenizer.add_token(token.id)
        if token.engine_finish is not None:
            self._detokenizer.finalize()
        text, stopped = self._stops.feed(self._detokenizer.last_segment)
        reason: str | None = None
        if stopped:
            reason = "stop"
        elif token.engine_finish is not None:
            text += self._stops.flush()
            reason = "stop" if hit_stop_token else "length"
        final = reason is not None
        content, reasoning = self._split(text, final)
        parts: list[str | ToolCallEvent] = [content]
        if self._tools is not None:
            parts = self._tools.feed(content)
            if final:
                parts += self._tools.flush()
        events = self._events(parts, reasoning, final)
        if reason is not None:
            if reason == "stop" and self._tools is not None and self._tools.calls:
                reason = "tool_calls"
            self.finished = self._finish(reason)
            events.append(self.finished)
        return events

    def _events(self, parts: list[str | ToolCallEvent], reasoning: str,
                final: bool) -> list[Event]:
        """Deltas and call events in the order of the text; the reasoning, and the
        logprobs gathered so far, go on the first delta."""
        events: list[Event] = []
        text = ""
        lead = bool(reasoning or (final and self._logprobs))
        for part in [*parts, None]:
            if isinstance(part, str):
                text += part
                continue
            if text or lead:
                events.append(Delta(text, reasoning, tuple(self._logprobs), self._choice))
                text, reasoning, lead = "", "", False
                self._logprobs = []
            if part is not None:
                events.append(part)
        return events

    def _split(self, text: str, final: bool) -> tuple[str, str]:
        """Route text to content or reasoning; on the last call, flush held-back text."""
        if self._reasoning is None:
            return text, ""
        parts = self._reasoning.feed(text) if text else []
        if final:
            parts = [*parts, *self._reasoning.flush()]
        content = "".join(t for kind, t in parts if kind == CONTENT)
        reasoning = "".join(t for kind, t in parts if kind == REASONING)
        return content, reasoning

    def _logprob(self, token: Token) -> TokenLogprob:
        """The sampled token's log-probability and its ``top_logprobs`` best alternatives."""
        import mlx.core as mx

        values: Any = token.logprobs
        top: tuple[TokenLogprob, ...] = ()
        count = self._top_logprobs or 0
        if count:
            best = mx.argpartition(-values, kth=count - 1)[:count]
            ids: list[int] = best.tolist()  # type: ignore[assignment]
            logprobs: list[float] = values[best].tolist()
            pairs = sorted(zip(ids, logprobs, strict=True), key=lambda p: -p[1])
            top = tuple(self._entry(i, v) for i, v in pairs if math.isfinite(v))
        return self._entry(token.id, float(values[token.id].item()), top)

    def _entry(self, token_id: int, logprob: float,
               top: tuple[TokenLogprob, ...] = ()) -> TokenLogprob:
        raw = self._vocab.token_bytes(token_id)
        return TokenLogprob(raw.decode("utf-8", errors="replace"), raw, logprob, top)

    def _finish(self, reason: str) -> Finished:
        ended = time.perf_counter()
        first = self._first_at or ended
        return Finished(
            finish_reason=reason,
            prompt_tokens=self._prompt_tokens,
            completion_tokens=len(self._token_ids),
            cached_tokens=self._cached_tokens,
            token_ids=tuple(self._token_ids),
            ttft_s=first - self._started,
            decode_s=(self._last_at or ended) - first,
            generation_s=ended - self._started,
            load_s=self._load_s,
            choice=self._choice,
            stop_sequence=self._stops.matched,
        )
