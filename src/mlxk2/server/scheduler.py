"""Continuous batching on one MLX thread.

Every MLX call (load, prefill, decode, unload) runs on the worker thread, so the
event loop never blocks on the model and MLX never sees two threads. Each loaded
model has one :class:`ModelBatch` around mlx-lm's ``BatchGenerator``; requests join
and leave it between decode steps. The asyncio side hands work over through a
thread-safe command queue and gets events back through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlxk2.engine.load import LoadedModel
    from mlxk2.engine.sampling import SamplingParams

log = logging.getLogger("mlxk2.server")

#: Prompts prefilled per step. Prefill cost grows with prompt tokens whether or not
#: prompts share a step, so taking them one per step lets each request start
#: decoding as soon as its own prompt is done (lower median time to first token);
#: decoding is where batching pays.
PREFILL_BATCH = 1


@dataclass(frozen=True)
class GenerationRequest:
    """One completion to run: tokens in, limits and sampling for this request only."""

    prompt_tokens: list[int]
    max_tokens: int
    sampling: SamplingParams
    stops: tuple[str, ...] = ()
    split_reasoning: bool = True
    start_in_reasoning: bool = False


@dataclass(frozen=True)
class Delta:
    """New text since the previous event; either part may be empty."""

    content: str
    reasoning: str = ""


@dataclass(frozen=True)
class Finished:
    """The last event of a completed request."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    decode_seconds: float
    cached_tokens: int = 0


@dataclass(frozen=True)
class Aborted:
    """The last event of a request the server had to cut short."""

    error: BaseException


Event = Delta | Finished | Aborted
Sink = Callable[[Event], None]


class Mailbox:
    """Where one request's events land: an asyncio queue on the loop that created it.

    The worker posts events in batches, one loop wake-up per decode step rather
    than one per token per request.
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Event] = asyncio.Queue()


def _deliver(items: list[tuple[Mailbox, Event]]) -> None:
    for mailbox, event in items:
        mailbox.queue.put_nowait(event)


class RequestText:
    """One request's token-to-text pipeline: detokenizer, stop strings, reasoning split.

    It also keeps the exact token count and timings. Used on the worker thread.
    """

    def __init__(self, request: GenerationRequest, loaded: LoadedModel,
                 cached_tokens: int = 0) -> None:
        from mlxk2.engine.reasoning import ReasoningParser
        from mlxk2.engine.stops import StopMatcher

        self.prompt_len = len(request.prompt_tokens)
        self.cached_tokens = cached_tokens
        self.hidden = loaded.hidden_tokens
        self.detokenizer = loaded.tokenizer.detokenizer
        self.stops = StopMatcher(list(request.stops))
        self.reasoning = (
            ReasoningParser(start_in_reasoning=request.start_in_reasoning)
            if request.split_reasoning else None
        )
        self.generated = 0
        self.first_token_at: float | None = None

    def push(self, token: int, engine_finish: str | None) -> tuple[Delta | None, str | None]:
        """Take one generated token.

        Args:
            token: The sampled token id.
            engine_finish: The generator's finish reason for this token: ``"stop"``
                (an end-of-sequence token, never shown as text), ``"length"`` or None.

        Returns:
            The new text, if any, and the request's finish reason once it is over
            (a stop string ends it even when the generator would go on).
        """
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.generated += 1
        hit_eos = engine_finish == "stop"
        if not hit_eos and token not in self.hidden:
            self.detokenizer.add_token(token)
        if engine_finish is not None:
            self.detokenizer.finalize()
        text, stopped = self.stops.feed(self.detokenizer.last_segment)
        reason: str | None = None
        if stopped:
            reason = "stop"
        elif engine_finish is not None:
            text += self.stops.flush()
            reason = "stop" if hit_eos else "length"
        return self._split(text, final=reason is not None), reason

    def _split(self, text: str, final: bool) -> Delta | None:
        """Route text to content or reasoning; on the last call, flush held-back text."""
        if self.reasoning is None:
            return Delta(text) if text else None
        parts = self.reasoning.feed(text) if text else []
        if final:
            parts = [*parts, *self.reasoning.flush()]
        content = "".join(t for kind, t in parts if kind == "content")
        reasoning = "".join(t for kind, t in parts if kind == "reasoning")
        return Delta(content, reasoning) if content or reasoning else None

    def finish(self, reason: str) -> Finished:
        now = time.perf_counter()
        first = self.first_token_at
        return Finished(
            finish_reason=reason,
            prompt_tokens=self.prompt_len,
            completion_tokens=self.generated,
            decode_seconds=0.0 if first is None else now - first,
            cached_tokens=self.cached_tokens,
        )


class _Live:
    """A running request: its text pipeline and where its events go."""

    def __init__(self, text: RequestText, sink: Sink) -> None:
        self.text = text
        self.sink = sink


class ModelBatch:
    """One model's running batch. Only the worker thread touches it.

    Args:
        loaded: The model.
        max_batch: Sequences decoded together.
        prompt_cache: Finished requests whose KV caches are kept for reuse (0: none).
    """

    def __init__(self, loaded: LoadedModel, max_batch: int, prompt_cache: int) -> None:
        from mlx_lm.generate import BatchGenerator

        from mlxk2.server.prompt_cache import PromptCache

        self.loaded = loaded
        self.prompt_cache = PromptCache(prompt_cache)
        stop_tokens = [[t] for t in sorted(loaded.stop_token_ids)]
        self._generator = BatchGenerator(
            loaded.model,
            stop_tokens=stop_tokens or None,
            completion_batch_size=max_batch,
            prefill_batch_size=PREFILL_BATCH,
        )
        self._live: dict[int, _Live] = {}
        # Requests with equal settings share one sampler object, which lets the
        # generator sample the whole batch in one call instead of row by row.
        self._samplers: dict[tuple[Any, ...], Any] = {}

    @property
    def busy(self) -> bool:
        return bool(self._live)

    def add(self, request: GenerationRequest, sink: Sink) -> int:
        """Queue a request into the running batch; it joins at the next step."""
        from mlxk2.engine.sampling import make_logits_processors

        prompt = request.prompt_tokens
        cache, cached = self.prompt_cache.lookup(prompt)
        live = _Live(RequestText(request, self.loaded, cached), sink)
        (uid,) = self._generator.insert(
            [prompt[cached:]],
            caches=[cache],
            all_tokens=[prompt[:cached]],
            max_tokens=[request.max_tokens],
            samplers=[self._sampler_for(request.sampling)],
            logits_processors=[make_logits_processors(request.sampling)],
        )
        self._live[uid] = live
        return uid

    def _sampler_for(self, p: SamplingParams) -> Any:
        from mlxk2.engine.sampling import make_sampler

        if p.seed is not None and p.temperature > 0:
            return make_sampler(p)  # it owns a random stream: never shared
        if not self._live:
            self._samplers.clear()  # only running requests' samplers are worth keeping
        key = (p.temperature, p.top_p, p.min_p, p.top_k,
               tuple(sorted((p.logit_bias or {}).items())))
        sampler = self._samplers.get(key)
        if sampler is None:
            sampler = self._samplers[key] = make_sampler(p)
        return sampler

    def cancel(self, uid: int) -> None:
        """Drop a request, e.g. after a disconnect; its slot is free at the next step."""
        if self._live.pop(uid, None) is not None:
            self._generator.remove([uid])

    def abort_all(self, error: BaseException) -> None:
        for uid, live in list(self._live.items()):
            self._generator.remove([uid])
            live.sink(Aborted(error))
        self._live.clear()

    def step(self) -> None:
        """Run one prefill/decode step and deliver the new text of each request."""
        _, responses = self._generator.next()
        for response in responses:
            live = self._live.get(response.uid)
            if live is None:
                continue
            if response.finish_reason is not None:
                self.prompt_cache.store(response.all_tokens, response.prompt_cache)
            self._deliver(response.uid, live, response.token, response.finish_reason)

    def _deliver(self, uid: int, live: _Live, token: int, engine_finish: str | None) -> None:
        delta, reason = live.text.push(token, engine_finish)
        if reason is not None and engine_finish is None:
            # A stop string ended it mid-batch.
            for cache, tokens in self._generator.remove([uid], return_prompt_caches=True).values():
                self.prompt_cache.store(tokens, cache)
        if delta is not None:
            live.sink(delta)
        if reason is not None:
            del self._live[uid]
            live.sink(live.text.finish(reason))

    def close(self) -> None:
        """End the batch and drop every reference to the model's arrays."""
        self.abort_all(RuntimeError("model unloaded"))
        self._generator.close()
        del self._generator
        del self.prompt_cache
        del self.loaded


@dataclass(frozen=True)
class Ticket:
    """Handle for cancelling a submitted request."""

    number: int


class Worker:
    """The dedicated MLX thread and its command queue."""

    def __init__(self, name: str = "mlxk2-mlx") -> None:
        self._commands: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._batches: set[ModelBatch] = set()
        self._uids: dict[int, tuple[ModelBatch, int]] = {}
        self._numbers = itertools.count()
        self._outbox: list[tuple[Mailbox, Event]] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Abort what is running, then end the thread."""
        if self._started and self._thread.is_alive():
            self._commands.put(None)
            self._thread.join(timeout)

    def call(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args)`` on the MLX thread; the future carries its result or error."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the waiting caller, not swallowed
                future.set_exception(exc)

        self._commands.put(job)
        return future

    def submit(self, batch: ModelBatch, request: GenerationRequest, mailbox: Mailbox) -> Ticket:
        """Start a request; its events arrive in ``mailbox``."""
        number = next(self._numbers)

        def sink(event: Event) -> None:
            self._outbox.append((mailbox, event))

        def job() -> None:
            try:
                uid = batch.add(request, sink)
            except Exception as exc:  # bad sampling values etc. reach the client as an error
                sink(Aborted(exc))
                return
            self._uids[number] = (batch, uid)
            self._batches.add(batch)

        self._commands.put(job)
        return Ticket(number)

    def cancel(self, ticket: Ticket) -> None:
        """Free the request's slot. Callers send this for every ticket when they are
        done with it, finished or not, so the worker can forget the ticket."""

        def job() -> None:
            entry = self._uids.pop(ticket.number, None)
            if entry is not None:
                entry[0].cancel(entry[1])

        self._commands.put(job)

    def release(self, batch: ModelBatch) -> concurrent.futures.Future[Any]:
        """Close a model's batch on the MLX thread and return its memory to the system."""

        def job() -> None:
            import gc

            import mlx.core as mx

            from mlxk2.server.memory import trim_heap

            self._batches.discard(batch)
            self._uids = {n: e for n, e in self._uids.items() if e[0] is not batch}
            batch.close()
            gc.collect()
            mx.clear_cache()
            trim_heap()

        return self.call(job)

    def abort_all(self, error: BaseException) -> None:
        """End every running request with ``error`` (used on shutdown)."""

        def job() -> None:
            for batch in list(self._batches):
                batch.abort_all(error)
            self._uids.clear()

        self._commands.put(job)

    def _run(self) -> None:
        while True:
            for command in self._drain(block=not any(b.busy for b in self._batches)):
                if command is None:
                    self._shutdown()
                    self._flush()
                    _release_streams()
                    return
                try:
                    command()
                except Exception:
                    log.exception("a scheduler command failed; the worker carries on")
            for batch in list(self._batches):
                if batch.busy:
                    self._step(batch)
                else:
                    self._batches.discard(batch)
            self._flush()

    def _flush(self) -> None:
        """Hand this step's events to their event loops, one wake-up per loop."""
        if not self._outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Mailbox, Event]]] = {}
        for item in self._outbox:
            by_loop.setdefault(item[0].loop, []).append(item)
        self._outbox = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:
                log.info("dropping events for a closed event loop")

    def _drain(self, block: bool) -> list[Callable[[], None] | None]:
        """Every pending command; waits for the first one only when idle."""
        commands = [self._commands.get()] if block else []
        while True:
            try:
                commands.append(self._commands.get_nowait())
            except queue.Empty:
                return commands

    def _step(self, batch: ModelBatch) -> None:
        try:
            batch.step()
        except Exception as exc:
            log.exception("generation failed; aborting the batch")
            batch.abort_all(exc)

    def _shutdown(self) -> None:
        error = RuntimeError("server shutting down")
        for batch in list(self._batches):
            batch.abort_all(error)
        self._batches.clear()


def _release_streams() -> None:
    """Free this thread's MLX streams before it ends.

    MLX leaves per-thread stream cleanup to the caller; streams left for the
    exit-time destructors can abort the process ("terminate called without an
    active exception") after a clean shutdown.
    """
    import mlx.core as mx

    mx.clear_streams()
