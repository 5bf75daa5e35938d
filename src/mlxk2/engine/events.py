"""The events one generation produces, read alike by ``run``, ``serve`` and the tests.

A request yields :class:`Delta` events as its text is decided (and, for each
tool call the model makes, a :class:`ToolCallStart`, :class:`ToolCallArguments`
pieces as the arguments are decoded, then the whole :class:`ToolCall`), then exactly one
:class:`Finished` per choice (or one :class:`Aborted`, when it was cut short by an
error or a shutdown). A request for ``n`` choices interleaves them, each event
naming its ``choice``. Every front door folds the same stream:
:func:`collect_events` / :func:`collect_choices` for a whole answer, or its own
loop for streaming.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One sampled token's log-probability, and the most likely alternatives (``top``).

    The values are the log-softmax of the distribution the token was drawn from,
    after the logits processors (penalties, a grammar's mask). ``bytes`` is the
    token's exact text, which can be part of a UTF-8 character.
    """

    token: str
    bytes: bytes
    logprob: float
    top: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Delta:
    """New text since the previous event; ``reasoning`` is the model's thinking, apart.

    ``logprobs`` covers the tokens sampled since the previous delta (when the
    request asked for them); a delta may carry only those.
    """

    content: str = ""
    reasoning: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()
    choice: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """A tool call has begun and its function is known; its arguments follow in pieces.

    ``index`` counts the calls of one choice from 0; ``id`` is the call's id, the
    same as on the :class:`ToolCall` that completes it.
    """

    index: int
    id: str
    name: str
    choice: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallArguments:
    """The next piece of an open call's arguments.

    The pieces of one call, in order, join to its :class:`ToolCall`'s
    ``arguments`` exactly. A call that breaks off (it does not parse, or the
    reply is cut short) never gets its :class:`ToolCall`; its text comes as
    content instead, as it does without streaming.
    """

    index: int
    arguments: str
    choice: int = 0


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A whole tool call the model made: ``arguments`` is a JSON object as text.

    ``index`` counts the calls of one choice from 0. It closes the call a
    :class:`ToolCallStart` opened.
    """

    index: int
    id: str
    name: str
    arguments: str
    choice: int = 0


@dataclass(frozen=True)
class Finished:
    """The last event of a completed request, with exact counts and timings.

    ``finish_reason`` is ``"stop"`` (a stop token or stop string), ``"length"``
    (``max_tokens`` reached) or ``"tool_calls"`` (it stopped after calling tools).
    ``completion_tokens`` counts every token the model produced, a final stop
    token included, and ``token_ids`` lists them;
    ``cached_tokens`` is the part of the prompt reused from the prompt cache;
    ``stop_sequence`` is the stop string that ended the reply, if one did.
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
    choice: int = 0
    stop_sequence: str | None = None

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


#: What is reported of one tool call: its start, its argument pieces, then the whole call.
ToolCallEvent = ToolCallStart | ToolCallArguments | ToolCall
Event = Delta | ToolCallStart | ToolCallArguments | ToolCall | Finished | Aborted


@dataclass(frozen=True)
class Reply:
    """A whole answer (one choice): its text, reasoning, tool calls, and the final event."""

    content: str
    reasoning: str
    finished: Finished
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


class ReplyBuilder:
    """Folds events into one :class:`Reply` per choice, one event at a time.

    Args:
        choices: How many choices the stream holds (the request's ``n``).
    """

    def __init__(self, choices: int = 1) -> None:
        self._choices = choices
        self._content: list[list[str]] = [[] for _ in range(choices)]
        self._reasoning: list[list[str]] = [[] for _ in range(choices)]
        self._logprobs: list[list[TokenLogprob]] = [[] for _ in range(choices)]
        self._calls: list[list[ToolCall]] = [[] for _ in range(choices)]
        self._done: dict[int, Reply] = {}

    def add(self, event: Event) -> list[Reply] | None:
        """Take one event; every choice's :class:`Reply`, in order, once all have finished.

        Raises:
            BaseException: the error an :class:`Aborted` event carries.
        """
        if isinstance(event, Aborted):
            raise event.error
        i = event.choice
        if isinstance(event, Delta):
            self._content[i].append(event.content)
            self._reasoning[i].append(event.reasoning)
            self._logprobs[i].extend(event.logprobs)
        elif isinstance(event, ToolCall):
            self._calls[i].append(event)
        elif isinstance(event, Finished):
            self._done[i] = Reply("".join(self._content[i]), "".join(self._reasoning[i]),
                                  event, tuple(self._calls[i]), tuple(self._logprobs[i]))
            if len(self._done) == self._choices:
                return [self._done[c] for c in range(self._choices)]
        # A call's pieces need no folding: the ToolCall that completes it carries all of it.
        return None


def collect_choices(events: Iterable[Event], choices: int = 1) -> list[Reply]:
    """Read a whole event stream into one :class:`Reply` per choice.

    The stream is read to its end, so a generator's cleanup runs before this returns.

    Raises:
        BaseException: an :class:`Aborted` event's error.
        RuntimeError: the stream ended before every choice finished.
    """
    builder = ReplyBuilder(choices)
    replies: list[Reply] | None = None
    for event in events:
        if replies is None:
            replies = builder.add(event)
    if replies is None:
        raise RuntimeError("generation ended without a final event")
    return replies


def collect_events(events: Iterable[Event]) -> Reply:
    """:func:`collect_choices` for a stream of one choice."""
    return collect_choices(events)[0]


async def acollect_choices(events: AsyncIterable[Event], choices: int = 1) -> list[Reply]:
    """:func:`collect_choices` for an asynchronous stream."""
    builder = ReplyBuilder(choices)
    replies: list[Reply] | None = None
    async for event in events:
        if replies is None:
            replies = builder.add(event)
    if replies is None:
        raise RuntimeError("generation ended without a final event")
    return replies
