"""The events one generation produces, read alike by ``run``, ``serve`` and the tests.

A request yields :class:`Delta` events as its text is decided, then exactly one
:class:`Finished` (or :class:`Aborted`, when it was cut short by an error or a
shutdown). Every front door folds the same stream: :func:`collect_events` for a
whole answer, or its own loop for streaming.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Delta:
    """New text since the previous event; ``reasoning`` is the model's thinking, apart."""

    content: str = ""
    reasoning: str = ""


@dataclass(frozen=True)
class Finished:
    """The last event of a completed request, with exact counts and timings.

    ``finish_reason`` is ``"stop"`` (a stop token or stop string) or ``"length"``
    (``max_tokens`` reached). ``completion_tokens`` counts every token the model
    produced, a final stop token included, and ``token_ids`` lists them;
    ``cached_tokens`` is the part of the prompt reused from the prompt cache.
    Timings run from the moment the request joined its batch: ``ttft_s`` to the
    first token, ``generation_s`` to the end; ``decode_s`` from the first token to
    the last. ``load_s`` is how long the model took to load.
    """

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    token_ids: tuple[int, ...] = ()
    ttft_s: float = 0.0
    decode_s: float = 0.0
    generation_s: float = 0.0
    load_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        """Decode rate: tokens after the first over the time they took (0 if unknown)."""
        if self.decode_s <= 0 or self.completion_tokens < 2:
            return 0.0
        return (self.completion_tokens - 1) / self.decode_s


@dataclass(frozen=True)
class Aborted:
    """The last event of a request that was cut short; ``error`` says why."""

    error: BaseException


Event = Delta | Finished | Aborted


@dataclass(frozen=True)
class Reply:
    """A whole answer: its text, its reasoning, and the final event."""

    content: str
    reasoning: str
    finished: Finished


class ReplyBuilder:
    """Folds events into a :class:`Reply`, one event at a time (sync or async sources)."""

    def __init__(self) -> None:
        self._content: list[str] = []
        self._reasoning: list[str] = []

    def add(self, event: Event) -> Reply | None:
        """Take one event; the :class:`Reply` once the stream is over.

        Raises:
            BaseException: the error an :class:`Aborted` event carries.
        """
        if isinstance(event, Delta):
            self._content.append(event.content)
            self._reasoning.append(event.reasoning)
            return None
        if isinstance(event, Aborted):
            raise event.error
        return Reply("".join(self._content), "".join(self._reasoning), event)


def collect_events(events: Iterable[Event]) -> Reply:
    """Read a whole event stream into a :class:`Reply`.

    The stream is read to its end, so a generator's cleanup runs before this returns.

    Raises:
        BaseException: an :class:`Aborted` event's error.
        RuntimeError: the stream ended without a final event.
    """
    builder = ReplyBuilder()
    reply: Reply | None = None
    for event in events:
        if reply is None:
            reply = builder.add(event)
    if reply is None:
        raise RuntimeError("generation ended without a final event")
    return reply


async def acollect_events(events: AsyncIterable[Event]) -> Reply:
    """:func:`collect_events` for an asynchronous stream."""
    builder = ReplyBuilder()
    reply: Reply | None = None
    async for event in events:
        if reply is None:
            reply = builder.add(event)
    if reply is None:
        raise RuntimeError("generation ended without a final event")
    return reply
