"""Server process start and stop: clean exits after signals, clear errors for bad ports.

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
from tests.fixtures.server import free_port, raw_request


def _wait_until_serving(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if raw_request(f"http://127.0.0.1:{port}", "GET", "/health").status == 200:
                return
        except OSError:
            time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_idle_server_stops_cleanly_after_a_signal(demo_cache, sig) -> None:
    env = cli_env(demo_cache.hf_home)
    for _ in range(4):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlxk2", "serve", "--model", CHAT, "--port", str(port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_until_serving(proc, port)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr[-2000:]
        assert "terminate called" not in stderr


def test_a_busy_port_is_an_error_envelope_before_any_start_up(demo_cache) -> None:
    import socket

    from tests.fixtures.cli import run_subprocess

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_subprocess("serve", "--port", str(port), "--json",
                                env=cli_env(demo_cache.hf_home), timeout=60)
    assert result.code == 3
    doc = result.json
    assert doc["command"] == "server"
    assert doc["error"]["type"] == "OperationError"
    assert "in use" in doc["error"]["message"]
    assert "mlxk2 server on" not in result.stderr


def test_a_busy_port_fails_before_the_model_loads(demo_cache) -> None:
    import socket

    from tests.fixtures.cli import run_subprocess

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_subprocess("serve", "--model", CHAT, "--port", str(port), "--json",
                                env=cli_env(demo_cache.hf_home), timeout=60)
    assert result.code == 3
    assert result.json["error"]["type"] == "OperationError"
    assert "loading" not in result.stderr


def test_an_impossible_port_is_a_validation_error(demo_cache) -> None:
    from tests.fixtures.cli import run_subprocess

    result = run_subprocess("serve", "--port", "99999", "--json",
                            env=cli_env(demo_cache.hf_home), timeout=60)
    assert (result.code, result.json["error"]["type"]) == (1, "ValidationError")
    assert "Traceback" not in result.stderr


def test_json_logs_are_one_object_per_line_and_warn_about_open_binds(demo_cache) -> None:
    import json

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk2", "serve", "--host", "0.0.0.0", "--port", str(port),
         "--log-json"], env=cli_env(demo_cache.hf_home),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_until_serving(proc, port)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    records = [json.loads(line) for line in stderr.splitlines()]
    messages = [r["message"] for r in records]
    assert any(m.startswith("mlxk2 server on") for m in messages)
    assert any("without --api-key" in m for m in messages)
