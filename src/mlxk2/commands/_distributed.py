"""``--distributed`` for ``run`` and ``serve``: the flags, joining the group, leaving on a fault.

Started under ``mlx.launch``, every rank runs the same command line. Rank 0
leads (reads the prompt, binds HTTP, prints); the other ranks follow it and
print nothing. A rank that loses the others exits non-zero within the rank
timeout, so no host keeps an orphan.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlxk2.errors import RankLostError, ValidationError

if TYPE_CHECKING:
    from mlxk2.engine.distributed import Group, Leader
    from mlxk2.server._state import ServerState
    from mlxk2.server.distributed import DistributedWorker

#: Default seconds a collective may wait for the other ranks before rank 0
#: gives up on them: longer than one prefill step of a large model over Ethernet.
RANK_TIMEOUT = 60.0
#: Seconds a faulted process has to leave on its own (report, answer 503)
#: before it is ended: a thread stuck in a collective cannot be joined.
FAULT_EXIT_AFTER = 3.0

log = logging.getLogger("mlxk2.distributed")


def _seconds(text: str) -> float:
    try:
        value = float(text.rstrip("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "distributed", "Run on several ranks started by mlx.launch "
        "(e.g. mlx.launch -n 2 --backend ring -- mlxk2 ... --distributed)")
    group.add_argument("--distributed", action="store_true",
                       help="Split the model over the ranks of this mlx.launch job")
    group.add_argument("--parallel", choices=("auto", "tensor", "pipeline"), default="auto",
                       help="How to split it: tensor (heads over ranks), pipeline (layers "
                            "over ranks) or auto, what the model supports (default: auto)")
    group.add_argument("--rank-timeout", type=_seconds, default=RANK_TIMEOUT, metavar="SECONDS",
                       help="Give up on the other ranks after this long without an answer "
                            f"(default: {RANK_TIMEOUT:g})")


def check_arguments(args: argparse.Namespace) -> None:
    """Distributed flags without ``--distributed`` would be silently ignored.

    Raises:
        ValidationError: ``--parallel`` or ``--rank-timeout`` given alone.
    """
    if not args.distributed and (args.parallel != "auto" or args.rank_timeout != RANK_TIMEOUT):
        raise ValidationError("--parallel and --rank-timeout need --distributed")


def join(args: argparse.Namespace,
         on_fault: Callable[[RankLostError], None] | None = None) -> Leader | None:
    """Join the launch's group; rank 0 gets its :class:`Leader`, the others follow.

    A follower runs rank 0's decisions here until rank 0 stops, and gets None.

    Raises:
        ValidationError: not started by ``mlx.launch`` or alone in the group.
        RankLostError: a follower lost rank 0.
    """
    from mlxk2.engine.distributed import Group, Leader, Watchdog, follow, launch_environment

    if launch_environment() is None:
        raise ValidationError("--distributed needs mlx.launch (e.g. 'mlx.launch -n 2 "
                              "--backend ring -- mlxk2 ... --distributed'), which sets MLX_RANK")
    try:
        group = Group()
    except RuntimeError as exc:
        raise RankLostError(f"Cannot join the distributed group: {exc}") from exc
    if group.size < 2:
        raise ValidationError("--distributed found a group of one rank; launch two or more")
    group.on_fault = _exit_soon(group, on_fault)
    watchdog = Watchdog(group, args.rank_timeout)
    watchdog.start()
    if group.rank == 0:
        log.info("rank 0 of %d leads", group.size)
        return Leader(group, args.parallel)
    # Ctrl-C in the launching terminal reaches every local rank; only rank 0
    # decides to stop, and tells the others.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        follow(group)
    finally:
        watchdog.stop()
    return None


def _exit_soon(group: Group,
               then: Callable[[RankLostError], None] | None) -> Callable[[RankLostError], None]:
    def on_fault(error: RankLostError) -> None:
        log.error("%s", error.message)
        if then is not None:
            then(error)
        timer = threading.Timer(FAULT_EXIT_AFTER, _hard_exit, (error,))
        timer.daemon = True
        timer.start()

    return on_fault


def _hard_exit(error: RankLostError) -> None:
    """End a process whose MLX thread is stuck in a collective (it cannot be joined)."""
    try:
        print(f"Error: {error.message}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # the launcher that read our output is gone
        pass
    os._exit(error.exit_code)


class ServeFault:
    """What a distributed server does when a rank is lost: 503 for everything, end the streams.

    The process then exits (:data:`FAULT_EXIT_AFTER`) with the error's code.
    """

    def __init__(self) -> None:
        self.state: ServerState | None = None
        self.worker: DistributedWorker | None = None

    def report(self, error: RankLostError) -> None:
        from mlxk2.server.distributed import rank_lost

        if self.state is not None:
            self.state.fail(rank_lost(error))
        if self.worker is not None:
            self.worker.end_streams(error)


def serving_worker(leader: Leader, fault: ServeFault) -> DistributedWorker:
    """Rank 0's MLX worker, registered with ``fault`` so a fault can end its streams."""
    from mlxk2.engine.distributed import launch_environment
    from mlxk2.server.distributed import DistributedWorker

    worker = DistributedWorker(leader, launch_environment())
    fault.worker = worker
    return worker
