"""What ``mlx.launch`` told this process, and which backends it could start here, without MLX.

``version`` reports both, so nothing here imports mlx: the launch is read from
the environment ``mlx.launch`` sets for each rank, the backends from the
installed files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: mlx.launch's ``--backend`` choices, in its order.
BACKENDS = ("ring", "mpi", "nccl", "jaccl")


@dataclass(frozen=True)
class LaunchInfo:
    """A distributed launch as its environment describes it (no MLX import).

    ``hosts`` lists each rank's addresses in rank order when a ring hostfile
    names them.
    """

    rank: int
    world_size: int | None
    backend: str
    hosts: tuple[tuple[str, ...], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "world_size": self.world_size, "backend": self.backend,
                "hosts": [list(h) for h in self.hosts]}


def launch_environment(env: Mapping[str, str] | None = None) -> LaunchInfo | None:
    """What ``mlx.launch`` told this process, or None outside a launch.

    The ring backend gets ``MLX_HOSTFILE`` (a JSON list of each rank's
    ``ip:port`` addresses), JACCL ``MLX_IBV_DEVICES``, NCCL ``MLX_WORLD_SIZE``
    and MPI its own variables; every launch sets ``MLX_RANK`` (MPI:
    ``OMPI_COMM_WORLD_RANK``).
    """
    env = os.environ if env is None else env
    rank_text = env.get("MLX_RANK", env.get("OMPI_COMM_WORLD_RANK"))
    if rank_text is None or not rank_text.strip().isdigit():
        return None
    rank = int(rank_text)
    if "MLX_IBV_DEVICES" in env or "MLX_JACCL_COORDINATOR" in env:
        devices = _json_file_or_text(env.get("MLX_IBV_DEVICES", ""))
        size = len(devices) if isinstance(devices, list) else None
        return LaunchInfo(rank, size, "jaccl")
    if "OMPI_COMM_WORLD_SIZE" in env:
        return LaunchInfo(rank, _count(env["OMPI_COMM_WORLD_SIZE"]), "mpi")
    if "NCCL_HOST_IP" in env:
        return LaunchInfo(rank, _count(env.get("MLX_WORLD_SIZE", "")), "nccl")
    hosts = _json_file_or_text(env.get("MLX_HOSTFILE", ""))
    if isinstance(hosts, list) and all(isinstance(h, list) for h in hosts):
        ring = tuple(tuple(str(a) for a in h) for h in hosts)
        return LaunchInfo(rank, len(ring), "ring", ring)
    return LaunchInfo(rank, None, "ring")


def _count(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def _json_file_or_text(value: str) -> Any:
    """The JSON in a file named ``value`` (what mlx.launch passes), or in ``value`` itself."""
    if not value:
        return None
    try:
        text = Path(value).read_text("utf-8") if Path(value).is_file() else value
        return json.loads(text)
    except (OSError, ValueError):
        return None


def launcher_path() -> str | None:
    """``mlx.launch`` next to this Python, else on PATH, else None."""
    beside = Path(sys.executable).with_name("mlx.launch")
    return str(beside) if beside.is_file() else shutil.which("mlx.launch")


def available_backends() -> list[str]:
    """The backends ``mlx.launch`` could start on this machine, judged from installed files.

    Every MLX build has the ring backend (TCP); MPI needs ``mpirun`` (mlx.launch
    runs it, and MLX loads libmpi at run time); NCCL comes only with the CUDA
    build (an ``mlx_cuda*`` distribution); JACCL (RDMA over Thunderbolt) only
    with the macOS build, and needs RDMA turned on, which is not checked here.
    Empty when mlx is not installed.
    """
    spec = importlib.util.find_spec("mlx")
    if spec is None or not spec.submodule_search_locations:
        return []
    site = Path(next(iter(spec.submodule_search_locations))).parent
    found = ["ring"]
    if shutil.which("mpirun") is not None:
        found.append("mpi")
    if any(site.glob("mlx_cuda*.dist-info")):
        found.append("nccl")
    if sys.platform == "darwin":
        found.append("jaccl")
    return found


def distributed_facts() -> dict[str, Any]:
    """``version``'s ``system.distributed``: the launcher, its backends, and this launch.

    ``launch`` is None outside ``mlx.launch``; inside, it is this process's rank,
    the world size and backend as the launch set them.
    """
    launch = launch_environment()
    return {
        "launcher": launcher_path(),
        "backends": available_backends(),
        "launch": None if launch is None else launch.to_dict(),
    }
