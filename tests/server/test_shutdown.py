"""Stopping an idle server right after start-up exits 0, every time.

MLX streams left to the exit-time destructors used to abort the process now
and then (exit 134), so the cycle is repeated.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.fixtures.cli import cli_env
from tests.fixtures.models import CHAT
from tests.server.conftest import free_port


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_idle_server_stops_cleanly_after_a_signal(demo_cache, sig) -> None:
    env = cli_env(demo_cache.hf_home)
    for _ in range(4):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlxk2", "serve", "--model", CHAT, "--port", str(port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        for line in proc.stderr:  # type: ignore[union-attr]
            if "Uvicorn running" in line or time.monotonic() > deadline:
                break
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr[-2000:]
        assert "terminate called" not in stderr
