"""``mlxk2 serve`` as a real process after SIGTERM: drain within the grace, then abort."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.fixtures.cli import cli_env
from tests.fixtures.models import CHAT
from tests.fixtures.server import free_port, raw_request, wait_until_healthy

LOOP_PROMPT = "Write a poem"  # the demo model's greedy reply never reaches end-of-sequence


@contextmanager
def _serve(hf_home: Path, log_path: Path, *flags: str
           ) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlxk2", "serve", "--model", CHAT, "--port", str(port),
             "--prompt-cache", "0", *flags],
            env=cli_env(hf_home), stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", [proc], log_path.read_text, timeout=90)
            yield proc, port
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


def _start_stream(port: int, max_tokens: int) -> tuple[http.client.HTTPConnection,
                                                        http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = {"model": CHAT, "messages": [{"role": "user", "content": LOOP_PROMPT}],
            "max_tokens": max_tokens, "stream": True}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert _next_event(response).startswith(b"data: {")  # generation is under way
    return conn, response


def _next_event(response: http.client.HTTPResponse) -> bytes:
    line = b"\n"
    while line == b"\n":
        line = response.readline()
    return line


def _wait_for_drain(port: int) -> None:
    """Until the server answers 503: the signal has arrived and it is draining."""
    deadline = time.monotonic() + 10
    while raw_request(f"http://127.0.0.1:{port}", "GET", "/health").status != 503:
        assert time.monotonic() < deadline, "the server never started draining"
        time.sleep(0.05)


def _events(response: http.client.HTTPResponse) -> list[str]:
    text = response.read().decode()
    return [block.strip()[len("data: "):] for block in text.split("\n\n") if block.strip()]


def test_a_stream_running_at_sigterm_finishes_within_the_grace(demo_cache, tmp_path) -> None:
    with _serve(demo_cache.hf_home, tmp_path / "log", "--shutdown-grace", "60s") as (proc, port):
        conn, response = _start_stream(port, max_tokens=1000)
        proc.send_signal(signal.SIGTERM)
        _wait_for_drain(port)
        refused = raw_request(f"http://127.0.0.1:{port}", "POST", "/v1/chat/completions",
                              body={"model": CHAT, "messages": [{"role": "user",
                                                                 "content": "hi"}]})
        assert refused.status == 503
        assert refused.json()["error"]["code"] == "shutting_down"
        events = _events(response)
        conn.close()
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all("error" not in c for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert proc.wait(30) == 0
        stdout = proc.stdout.read() if proc.stdout else ""
    assert "Server stopped." in stdout
    log = (tmp_path / "log").read_text()
    assert "draining: 1 request(s) in flight" in log
    assert "Traceback" not in log


def test_with_no_grace_a_running_stream_is_cut_at_once(demo_cache, tmp_path) -> None:
    with _serve(demo_cache.hf_home, tmp_path / "log", "--shutdown-grace", "0") as (proc, port):
        conn, response = _start_stream(port, max_tokens=100_000)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        events = _events(response)
        conn.close()
        assert time.monotonic() - signalled < 10
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "shutting_down"
        assert proc.wait(30) == 0


def test_a_stream_outlasting_the_grace_is_aborted_when_it_ends(demo_cache, tmp_path) -> None:
    with _serve(demo_cache.hf_home, tmp_path / "log", "--shutdown-grace", "1s") as (proc, port):
        conn, response = _start_stream(port, max_tokens=100_000)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        events = _events(response)
        waited = time.monotonic() - signalled
        conn.close()
        assert 0.9 < waited < 15
        assert json.loads(events[-2])["error"]["code"] == "shutting_down"
        assert proc.wait(30) == 0
    assert "shutdown grace over: aborting 1 request(s)" in (tmp_path / "log").read_text()


def test_a_second_signal_aborts_the_drain_at_once(demo_cache, tmp_path) -> None:
    with _serve(demo_cache.hf_home, tmp_path / "log", "--shutdown-grace", "10m") as (proc, port):
        conn, response = _start_stream(port, max_tokens=100_000)
        proc.send_signal(signal.SIGTERM)
        _wait_for_drain(port)
        time.sleep(0.5)
        assert _next_event(response).startswith(b"data: {")  # still streaming while draining
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        events = _events(response)
        conn.close()
        assert time.monotonic() - signalled < 10
        assert json.loads(events[-2])["error"]["code"] == "shutting_down"
        assert proc.wait(30) == 0


def test_json_logs_carry_the_closing_line_and_stdout_stays_empty(demo_cache, tmp_path) -> None:
    with _serve(demo_cache.hf_home, tmp_path / "log", "--log-json") as (proc, _):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        stdout = proc.stdout.read() if proc.stdout else ""
    assert stdout == ""
    records = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    assert records[-1]["message"] == "Server stopped."
