"""OpenBLAS threads of a distributed rank: the host's CPUs shared by the ranks it runs."""

from __future__ import annotations

import pytest

from mlxk2.commands._distributed import rank_threads
from mlxk2.engine.launch import LaunchInfo


@pytest.fixture
def eight_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "8")


def _launch(rank: int, *hosts: str) -> LaunchInfo:
    return LaunchInfo(rank, len(hosts), "ring", tuple((f"{h}:5000",) for h in hosts))


@pytest.mark.usefixtures("eight_cpus")
@pytest.mark.parametrize(("launch", "threads"), [
    (_launch(0, "127.0.0.1", "127.0.0.1"), 4),  # two ranks on one host share it
    (_launch(1, "10.0.0.1", "10.0.0.2"), 8),  # one rank a host: all of it
    (_launch(3, "10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.1"), 2),  # 8 // 3
    (_launch(0, *["127.0.0.1"] * 16), 1),  # never below one
    (LaunchInfo(0, 2, "jaccl"), 8),  # no addresses known: the host is this rank's
])
def test_ranks_split_their_hosts_cpus(launch: LaunchInfo, threads: int) -> None:
    assert rank_threads(launch) == threads
