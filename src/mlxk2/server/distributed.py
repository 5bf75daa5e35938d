"""``serve --distributed`` on rank 0: the MLX worker of a group of ranks.

The worker is the single-process one; its batches are
:class:`~mlxk2.engine.distributed.ReplicatedBatch` objects, so every join, leave
and step is shared with the other ranks before rank 0 runs it. What is added
here: a heartbeat while idle (a lost link then shows up as a stalled
collective), the group's ``Stop`` once the server is done, and on a fault the
end of every open stream, since the MLX thread may be stuck in a collective.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlxk2.engine.distributed import rank_layout
from mlxk2.engine.events import Aborted
from mlxk2.errors import RankLostError
from mlxk2.server.errors import ServiceUnavailableError
from mlxk2.server.worker import Mailbox, Ticket, Worker

if TYPE_CHECKING:
    from mlxk2.engine.batch import GenerationRequest, ModelBatch
    from mlxk2.engine.distributed import Leader
    from mlxk2.engine.launch import LaunchInfo

#: Seconds an idle rank 0 waits before telling the other ranks it is still there.
HEARTBEAT_INTERVAL = 1.0


def rank_lost(error: RankLostError) -> ServiceUnavailableError:
    """The HTTP face of a lost rank: 503, so clients and balancers go elsewhere."""
    return ServiceUnavailableError(f"{error.message}; this server is stopping",
                                   code="rank_lost")


class DistributedWorker(Worker):
    """The MLX thread of rank 0.

    Args:
        leader: Rank 0's side of the group; only this worker's thread uses it.
        launch: The launch's environment, for ``/health``.
    """

    def __init__(self, leader: Leader, launch: LaunchInfo | None) -> None:
        super().__init__()
        self.leader = leader
        self._launch = launch
        self._mailboxes: dict[int, Mailbox] = {}

    def open_batch(self, path: Any, name: str, max_batch: int, prompt_cache: int) -> ModelBatch:
        """Load a model on every rank (runs on this worker's thread)."""
        return self.leader.open(path, name, max_batch, prompt_cache)

    def submit(self, batch: ModelBatch, request: GenerationRequest, mailbox: Mailbox) -> Ticket:
        ticket = super().submit(batch, request, mailbox)
        self._mailboxes[ticket.number] = mailbox
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        self._mailboxes.pop(ticket.number, None)
        super().cancel(ticket)

    def end_streams(self, error: RankLostError) -> None:
        """End every open request with a 503 error event, from any thread."""
        event = Aborted(rank_lost(error))
        for mailbox in list(self._mailboxes.values()):
            try:
                mailbox.loop.call_soon_threadsafe(mailbox.queue.put_nowait, event)
            except RuntimeError:  # that request's event loop is already closed
                continue

    def cluster(self) -> dict[str, Any] | None:
        return rank_layout(self.leader, self._launch)

    def _drain(self, block: bool) -> list[Callable[[], None] | None]:
        if not block:
            return super()._drain(False)
        try:
            first = self._commands.get(timeout=HEARTBEAT_INTERVAL)
        except queue.Empty:
            self._heartbeat()
            return []
        return [first, *super()._drain(False)]

    def _heartbeat(self) -> None:
        try:
            self.leader.heartbeat()
        except RankLostError:
            return  # the group's fault handler reports it

    def _shutdown(self) -> None:
        super()._shutdown()
        self.leader.stop()
