"""``mlxk2 serve`` as a real process: start-up, a bad model, keep-alive memory, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.cli import cli_env, run_subprocess
from tests.fixtures.models import CHAT
from tests.fixtures.schema import assert_valid_envelope
from tests.fixtures.server import connection, free_port, raw_request, wait_until_healthy

KEY = "env-secret"


def test_bad_model_fails_before_binding_the_port(demo_cache):
    port = free_port()
    result = run_subprocess("serve", "--model", "nobody/missing", "--port", str(port), "--json",
                            env=cli_env(demo_cache.hf_home), timeout=60)
    assert result.code == 1
    doc = result.json
    assert_valid_envelope(doc)
    assert doc["command"] == "server"
    assert doc["error"]["type"] == "model_not_found"
    with pytest.raises(ConnectionRefusedError):
        raw_request(f"http://127.0.0.1:{port}", "GET", "/health")


@pytest.fixture(scope="module")
def served(demo_cache, mid_workspace, tmp_path_factory
           ) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    """The server as a process; its stderr goes to a file so a full pipe never blocks it."""
    port = free_port()
    env = cli_env(demo_cache.hf_home, MLXK2_API_KEY=KEY)
    log_path = tmp_path_factory.mktemp("serve-log") / "stderr.txt"
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk2", "serve", "--model", str(mid_workspace),
         "--port", str(port), "--keep-alive", "2s", "--prompt-cache", "0",
         "--shutdown-grace", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=log_file, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(url, [proc], log_path.read_text, timeout=90)
    yield proc, url, log_path
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    log_file.close()


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def _rss(url: str) -> int:
    return raw_request(url, "GET", "/health").json()["rss_bytes"]


def _loaded(url: str) -> list[str]:
    return raw_request(url, "GET", "/health").json()["loaded_models"]


def test_api_key_from_the_environment_guards_v1(served):
    _, url, _ = served
    assert raw_request(url, "GET", "/v1/models").status == 401
    listed = raw_request(url, "GET", "/v1/models", headers=_auth())
    assert listed.status == 200
    assert CHAT in {m["id"] for m in listed.json()["data"]}


def test_keep_alive_unloads_and_memory_drops(served, mid_workspace):
    _, url, _ = served
    body = {"model": str(mid_workspace), "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4}
    assert raw_request(url, "POST", "/v1/chat/completions", body=body,
                       headers=_auth()).status == 200
    assert str(mid_workspace) in _loaded(url)
    loaded_rss = _rss(url)
    deadline = time.monotonic() + 30
    while str(mid_workspace) in _loaded(url):
        assert time.monotonic() < deadline, "model was never unloaded"
        time.sleep(0.2)
    weights = sum(p.stat().st_size for p in mid_workspace.glob("*.safetensors"))
    assert loaded_rss - _rss(url) > weights * 0.6


def test_prompt_cache_flag_zero_turns_the_cache_off(served):
    _, url, _ = served
    body = {"model": CHAT, "messages": [{"role": "user", "content": "Say it again."}],
            "max_tokens": 2}
    for _ in range(2):  # with the cache on, the repeat would reuse all but one token
        answer = raw_request(url, "POST", "/v1/chat/completions", body=body, headers=_auth())
        assert answer.status == 200
        assert answer.json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


def test_sigterm_ends_streams_with_an_error_and_exits_zero(served):
    proc, url, log_path = served
    conn = connection(url)
    body = {"model": CHAT, "messages": [{"role": "user", "content": "Keep talking."}],
            "max_tokens": 4000, "stream": True}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", **_auth()})
    response = conn.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"data: ")
    proc.send_signal(signal.SIGTERM)
    rest = response.read().decode()
    conn.close()
    events = [block.strip()[len("data: "):] for block in rest.split("\n\n") if block.strip()]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "shutting_down"
    assert proc.wait(30) == 0
    stderr = log_path.read_text()
    assert "127.0.0.1" in stderr and "loopback only" in stderr
    assert "Traceback" not in stderr
    children = [p for p in os.listdir("/proc") if p.isdigit()
                and _parent_of(p) == proc.pid] if os.path.isdir("/proc") else []
    assert children == []


def _parent_of(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_serve_command_module_imports_no_server_stack(demo_cache):
    code = ("import sys, mlxk2.cli; mlxk2.cli.build_parser(); "
            "heavy = [m for m in ('fastapi', 'uvicorn', 'mlx', 'mlx_lm', 'starlette') "
            "if m in sys.modules]; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], env=cli_env(demo_cache.hf_home),
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr



def test_signal_during_model_load_stops_with_exit_zero(demo_cache, mid_workspace):
    # SIGINT ignored by the parent, as for background jobs: the server must still stop.
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk2", "serve", "--model", str(mid_workspace),
         "--port", str(free_port())],
        env=cli_env(demo_cache.hf_home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert proc.stderr is not None
        assert "loading " in proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, stderr
    assert "Server stopped." in stdout
    assert "mlxk2 server on" not in stderr
