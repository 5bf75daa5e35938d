"""Per-app state shared by the handlers: admission control and shutdown."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from fastapi import Request

from mlxk2.server._store import ResponseStore
from mlxk2.server.config import ServerConfig
from mlxk2.server.errors import ServiceUnavailableError
from mlxk2.server.metrics import Metrics
from mlxk2.server.provider import ModelProvider


class Admission:
    """At most ``slots`` requests generate at once; at most ``max_queue`` wait."""

    def __init__(self, slots: int, max_queue: int, metrics: Metrics) -> None:
        self._slots = asyncio.Semaphore(slots)
        self._max_queue = max_queue
        self._waiting = 0
        self._metrics = metrics

    async def enter(self) -> None:
        """Take a slot, waiting in the queue if needed.

        Raises:
            ServiceUnavailableError: The queue is full.
        """
        if self._slots.locked() and self._waiting >= self._max_queue:
            raise ServiceUnavailableError("The server is at capacity; retry shortly.",
                                          code="queue_full")
        self._waiting += 1
        self._metrics.queue_depth.set(self._waiting)
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
            self._metrics.queue_depth.set(self._waiting)
        self._metrics.active_requests.inc()

    def leave(self) -> None:
        self._slots.release()
        self._metrics.active_requests.dec()


@dataclass
class ServerState:
    """Everything a handler needs, hung on ``app.state.mlxk``."""

    config: ServerConfig
    provider: ModelProvider
    metrics: Metrics
    admission: Admission
    draining: bool = False
    aborted: bool = False
    #: Why the server can no longer answer (a lost rank); every request gets it.
    fault: Exception | None = None
    started: float = field(default_factory=time.time)
    responses: ResponseStore = field(init=False)

    def __post_init__(self) -> None:
        self.responses = ResponseStore(self.config.responses_store)

    def begin_drain(self) -> None:
        """Refuse new work (503) and let running requests finish."""
        self.draining = True

    def fail(self, error: Exception) -> None:
        """Answer every request, ``/health`` included, with ``error`` from now on."""
        self.fault = error
        self.draining = True

    def begin_shutdown(self) -> None:
        """Refuse new work and end running streams with an error event."""
        self.draining = True
        if not self.aborted:
            self.aborted = True
            self.provider.worker.abort_all(
                ServiceUnavailableError("The server is shutting down.", code="shutting_down")
            )


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.mlxk
    return state
