"""``--distributed`` for ``run`` and ``serve``: the flags, joining the group, leaving on a fault.

Started under ``mlx.launch``, every rank runs the same command line. Rank 0
leads (reads the prompt, binds HTTP, prints); the other ranks follow it and
print nothing. A rank that loses the others exits non-zero within the rank
timeout, so no host keeps an orphan.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mlxk2.errors import OperationError, RankLostError, ValidationError

if TYPE_CHECKING:
    from mlxk2.engine.distributed import Group, Leader
    from mlxk2.engine.launch import LaunchInfo
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


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """``--hostfile``: run ``mlx.launch`` for the user instead of being run by it."""
    group = parser.add_argument_group(
        "launching", "Start the ranks yourself: mlxk2 serve --hostfile hosts.json ... runs "
        "mlx.launch --hostfile hosts.json --backend ring -- mlxk2 serve ... --distributed")
    group.add_argument("--hostfile", metavar="FILE",
                       help="mlx.launch's hostfile: one rank per host, every host with the "
                            "same mlxk2 and model (ring backend unless the file names one)")
    group.add_argument("--starting-port", type=_ring_port, metavar="PORT",
                       help="With --hostfile: the first port the ring backend listens on, "
                            "one more per rank (default: mlx.launch's, 32323)")


def _ring_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port 1-65535, got {text!r}")
    return int(text)


#: Options of the launching command that are not passed on to the ranks.
_LAUNCH_ONLY = ("hostfile", "starting_port", "distributed")


def launcher_command(args: argparse.Namespace, command: str,
                     add_arguments: Callable[[argparse.ArgumentParser], None],
                     *, json_mode: bool) -> list[str]:
    """The ``mlx.launch`` command line that runs ``command`` with ``args`` on every host.

    The ranks get the options that differ from their defaults, read back through
    the command's own parser, and ``--distributed``.

    Raises:
        ValidationError: the hostfile is missing or not JSON.
        OperationError: no ``mlx.launch`` next to this Python or on PATH.
    """
    hostfile = Path(args.hostfile)
    try:
        hosts: Any = json.loads(hostfile.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ValidationError(f"--hostfile {hostfile}: not a readable JSON hostfile "
                              f"({exc})") from exc
    from mlxk2.engine.launch import launcher_path

    found = launcher_path()
    if found is None:
        raise OperationError("--hostfile needs mlx.launch (part of mlx), found neither next "
                             f"to {sys.executable} nor on PATH")
    names_backend = isinstance(hosts, dict) and "backend" in hosts
    launch = [found, "--hostfile", str(hostfile), *([] if names_backend else
                                                     ["--backend", "ring"])]
    if args.starting_port is not None:
        launch += ["--starting-port", str(args.starting_port)]
    ranks = [sys.executable, "-m", "mlxk2", command, *(["--json"] if json_mode else [])]
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    for action in parser._actions:
        value = getattr(args, action.dest, action.default)
        if not action.option_strings or action.dest in _LAUNCH_ONLY or value == action.default:
            continue
        flag = next(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._StoreTrueAction):
            ranks.append(flag)
        elif isinstance(value, list):
            ranks += [part for item in value for part in (flag, str(item))]
        else:
            ranks += [flag, str(value)]
    return [*launch, "--", *ranks, "--distributed"]


def exec_launcher(command: list[str]) -> NoReturn:
    """Become ``mlx.launch``: Ctrl-C then reaches it and the local ranks, as when typed."""
    log.info("running %s", " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


def layout_line(layout: dict[str, Any]) -> str:
    """One line on where the ranks are, for ``run --verbose``."""
    ranks = ", ".join(f"rank {r['rank']} {' '.join(r['addresses'])}" for r in layout["ranks"])
    return (f"[{layout['world_size']} ranks, {layout['backend'] or 'unknown'} backend, "
            f"{layout['parallel']} parallel{': ' + ranks if ranks else ''}]")


def check_arguments(args: argparse.Namespace) -> None:
    """Distributed flags without ``--distributed`` would be silently ignored.

    Raises:
        ValidationError: ``--parallel`` or ``--rank-timeout`` given without
            ``--distributed`` or ``--hostfile``.
    """
    launching = getattr(args, "hostfile", None) is not None
    if not (args.distributed or launching) and (args.parallel != "auto"
                                                or args.rank_timeout != RANK_TIMEOUT):
        raise ValidationError("--parallel and --rank-timeout need --distributed (or --hostfile)")


def rank_threads(launch: LaunchInfo) -> int:
    """OpenBLAS threads for one rank: this host's CPUs shared by the ranks it runs.

    Ranks on one host (by the address the hostfile gives each) would otherwise each
    start a thread per CPU and stall one another at every BLAS barrier.
    """
    from mlxk2.engine.blas import default_threads

    def host(rank: int) -> str | None:
        addresses = launch.hosts[rank] if rank < len(launch.hosts) else ()
        return addresses[0].rsplit(":", 1)[0] if addresses else None

    mine = host(launch.rank)
    local = sum(1 for rank in range(len(launch.hosts)) if host(rank) == mine) if mine else 1
    return max(1, default_threads() // max(1, local))


def join(args: argparse.Namespace,
         on_fault: Callable[[RankLostError], None] | None = None) -> Leader | None:
    """Join the launch's group; rank 0 gets its :class:`Leader`, the others follow.

    A follower runs rank 0's decisions here until rank 0 stops, and gets None.

    Raises:
        ValidationError: not started by ``mlx.launch`` or alone in the group.
        RankLostError: a follower lost rank 0.
    """
    from mlxk2.engine.blas import ensure_blas
    from mlxk2.engine.distributed import Group, Leader, Watchdog, follow
    from mlxk2.engine.launch import launch_environment

    launch = launch_environment()
    if launch is None:
        raise ValidationError("--distributed needs mlx.launch (e.g. 'mlx.launch -n 2 "
                              "--backend ring -- mlxk2 ... --distributed'), which sets MLX_RANK")
    ensure_blas(rank_threads(launch))  # joining imports mlx: bind OpenBLAS first
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
    from mlxk2.engine.launch import launch_environment
    from mlxk2.server.distributed import DistributedWorker

    worker = DistributedWorker(leader, launch_environment())
    fault.worker = worker
    return worker
