"""The MLX worker thread: every MLX call of the server runs here.

Every MLX call (load, prefill, decode, unload) runs on the worker thread, so the
event loop never blocks on the model and MLX never sees two threads. Each loaded
model has one :class:`~mlxk2.engine.batch.ModelBatch`; requests join and leave it
between decode steps. The asyncio side hands work over through a thread-safe
command queue and gets events back through ``call_soon_threadsafe``, one loop
wake-up per step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from mlxk2.engine.events import Aborted, Event

if TYPE_CHECKING:
    from mlxk2.engine.batch import GenerationRequest, ModelBatch

log = logging.getLogger("mlxk2.server")

T = TypeVar("T")


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

    def call(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Run ``fn(*args)`` on the MLX thread; the future carries its result or error."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

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

    def release(self, batch: ModelBatch) -> concurrent.futures.Future[None]:
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

    def cluster(self) -> dict[str, Any] | None:
        """The distributed group this worker leads, for ``/health`` (None: one process)."""
        return None

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
