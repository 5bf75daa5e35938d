"""Hostile clients against a real ``mlxk2 serve`` on 127.0.0.1: fuzzing, a soak, liveness.

One server process (the tiny demo chat model, an API key, ``--max-tokens 8``) is
started, then three phases run while a poller times ``GET /health`` every 20 ms:

1. schemathesis fuzzing from the server's own ``/openapi.json``: ``--examples``
   generated requests per operation, valid (positive) and invalid (negative),
   with the key and with a wrong key; every status is counted and a 5xx is an error;
2. a soak: ``--soak`` mixed requests from ``--workers`` threads (chat plain, streamed
   and cancelled mid-stream, completions, Responses, Messages plain and streamed,
   count_tokens, malformed, wrong model, wrong content type, foreign origin), each
   checked for its expected status; the server's RSS is read
   before and after, and its ``/metrics`` request counter must equal the requests sent;
3. hostile inputs: 3.9 MB and 1 MB prompts on every generating endpoint (a tool
   description too), JSON nested 100,000 deep, lone surrogates, NaN, bad ``logit_bias``
   keys, an unload sent as a form, and 20 connections that never finish
   their headers, while one stream runs; the stream's longest pause is reported.

It prints the counts, the soak's figures and the worst ``/health`` latency of each phase.

Usage: python benchmarks/bench_hostile.py [--examples 200] [--soak 1000] [--workers 16]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

MODEL = "mlxk2/demo-chat"
KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {"Content-Type": "application/json", **AUTH}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk2", "serve", "--model", MODEL, "--port", str(port),
         "--api-key", KEY, "--max-tokens", "8", "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if request(port, "GET", "/health")[0] == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


class HealthPoller:
    """Times ``GET /health`` every 20 ms; ``worst()`` is the slowest answer since ``reset``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            began = time.perf_counter()
            status, _ = request(self.port, "GET", "/health")
            assert status == 200
            self.latencies.append(time.perf_counter() - began)
            time.sleep(0.02)

    def reset(self) -> None:
        self.latencies = []

    def worst(self) -> tuple[float, int]:
        return max(self.latencies, default=0.0), len(self.latencies)


def fuzz(port: int, examples: int) -> Counter[tuple[str, str, int]]:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable

    _, doc = request(port, "GET", "/openapi.json", headers=AUTH)
    schema = schemathesis.openapi.from_dict(json.loads(doc))
    base = f"http://127.0.0.1:{port}"
    seen: Counter[tuple[str, str, int]] = Counter()

    def sender(operation: Any, mode: Any, headers: dict[str, str], label: str) -> Any:
        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode), served=st.booleans())
        def call(case: Any, served: bool) -> None:
            if served and isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = MODEL
            response = case.call(base_url=base, headers=headers, timeout=120)
            seen[(label, case.operation.label, response.status_code)] += 1

        return call

    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
        for key, headers in (("key", AUTH), ("wrong key", {"Authorization": "Bearer x"})):
            for result in schema.get_all_operations():
                operation = result.ok()
                if mode.is_negative and not (operation.body or operation.path_parameters):
                    continue  # nothing to break in GET /health
                with contextlib.suppress(Unsatisfiable):
                    sender(operation, mode, headers, f"{mode.value}, {key}")()
    return seen


def soak_request(port: int, index: int) -> tuple[str, bool]:
    """The ``index``-th request of the mix; (kind, answered as expected)."""
    rng = random.Random(index)
    kind = ("chat", "stream", "cancel", "text", "malformed", "missing", "form",
            "origin", "responses", "messages", "messages stream", "count")[index % 12]
    message = [{"role": "user", "content": f"Question {index}: {'why ' * rng.randint(1, 40)}"}]
    body: dict[str, Any] = {"model": MODEL, "messages": message, "max_tokens": 8,
                            "temperature": rng.choice([0, 0.7]), "seed": index}
    headers = dict(JSON)
    expected = 200
    path = "/v1/chat/completions"
    if kind == "text":
        path, body = "/v1/completions", {"model": MODEL, "prompt": f"Story {index}:",
                                         "max_tokens": 8}
    elif kind == "responses":
        path, body = "/v1/responses", {"model": MODEL, "input": message,
                                       "max_output_tokens": 8, "seed": index}
    elif kind.startswith("messages"):
        path = "/v1/messages"
        body["stream"] = kind.endswith("stream")
    elif kind == "count":
        path, body = "/v1/messages/count_tokens", {"model": MODEL, "messages": message}
    elif kind in ("stream", "cancel"):
        body["stream"] = True
    elif kind == "malformed":
        expected = 400
    elif kind == "missing":
        body["model"], expected = "nobody/missing", 404
    elif kind == "form":
        headers["Content-Type"], expected = "application/x-www-form-urlencoded", 415
    elif kind == "origin":
        headers["Origin"], expected = "http://evil.example", 403
    raw = json.dumps(body).encode()[: 20 if kind == "malformed" else None]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, body=raw, headers=headers)
        response = conn.getresponse()
        if kind == "cancel":
            response.readline()
            response.readline()  # the first event is out: hang up mid-answer
            return kind, response.status == 200
        data = response.read()
    finally:
        conn.close()
    if kind == "stream":
        return kind, response.status == 200 and data.rstrip().endswith(b"data: [DONE]")
    if kind == "messages stream":
        return kind, response.status == 200 and data.rstrip().endswith(b'{"type": "message_stop"}')
    return kind, response.status == expected


def metric(port: int, prefix: str) -> float:
    _, text = request(port, "GET", "/metrics", headers=AUTH)
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.decode().splitlines()
               if line.startswith(prefix))


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def soak(port: int, pid: int, total: int, workers: int) -> dict[str, Any]:
    generating = 'mlxk2_requests_total{endpoint="/v1/'  # every endpoint the mix calls
    before_requests = metric(port, generating)
    rss_before = rss_of(pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda i: soak_request(port, i), range(total)))
    elapsed = time.perf_counter() - started
    time.sleep(0.5)  # cancelled streams are counted when the server notices the hang-up
    counted = metric(port, generating) - before_requests
    wrong = Counter(kind for kind, ok in results if not ok)
    return {"requests": total, "workers": workers, "seconds": elapsed,
            "unexpected": dict(wrong), "counted_by_metrics": counted,
            "rss_before": rss_before, "rss_after": rss_of(pid),
            "active_after": metric(port, "mlxk2_active_requests"),
            "queue_after": metric(port, "mlxk2_queue_depth")}


def hostile(port: int) -> dict[str, Any]:
    long_text = "hello world, this is a test. " * 134_000
    hello = [{"role": "user", "content": "hi"}]
    cases = {
        "3.9 MB completions prompt": ("/v1/completions",
                                      {"model": MODEL, "prompt": long_text}),
        "1 MB chat message": ("/v1/chat/completions", {"model": MODEL, "messages": [
            {"role": "user", "content": long_text[:1_000_000]}]}),
        "JSON 100,000 deep": ("/v1/chat/completions", "[" * 100_000 + "]" * 100_000),
        "lone surrogate prompt": ("/v1/completions",
                                  f'{{"model": "{MODEL}", "prompt": "\\ud800"}}'),
        "lone surrogate model": ("/v1/chat/completions",
                                 '{"model": "\\ud800", "messages": []}'),
        "logit_bias key '²'": ("/v1/chat/completions", {"model": MODEL, "logit_bias": {"²": 1},
                                                        "messages": [{"role": "user",
                                                                      "content": "x"}]}),
        "3.9 MB Responses input": ("/v1/responses", {"model": MODEL, "input": long_text}),
        "3.9 MB Messages system": ("/v1/messages", {"model": MODEL, "max_tokens": 8,
                                                    "system": long_text, "messages": hello}),
        "3.9 MB count_tokens": ("/v1/messages/count_tokens", {"model": MODEL, "messages": [
            {"role": "user", "content": long_text}]}),
        "3.9 MB tool description": ("/v1/responses", {"model": MODEL, "input": "x", "tools": [
            {"type": "function", "name": "f", "description": long_text}]}),
        "Messages JSON 100,000 deep": ("/v1/messages", "[" * 100_000 + "]" * 100_000),
        "Responses lone surrogate": ("/v1/responses",
                                     f'{{"model": "{MODEL}", "instructions": "\\ud800"}}'),
        "Messages NaN max_tokens": ("/v1/messages", f'{{"model": "{MODEL}", "max_tokens": NaN, '
                                                    '"messages": []}'),
        "unload as a form post": (f"/v1/models/{MODEL}/unload", "keep_alive=0"),
    }
    chunk_times: list[float] = []
    streaming = threading.Event()

    def stream() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Go on."}],
                "max_tokens": 8, "stream": True}
        while not done.is_set():  # one short stream after another, all phase long
            conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers=JSON)
            for line in conn.getresponse():
                if line.startswith(b"data: "):
                    chunk_times.append(time.perf_counter())
                    streaming.set()
        conn.close()

    done = threading.Event()
    streamer = threading.Thread(target=stream)
    streamer.start()
    streaming.wait(60)
    statuses = {}
    began = time.perf_counter()
    for label, (path, body) in cases.items():
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        headers = JSON
        if label == "unload as a form post":
            headers = {**JSON, "Content-Type": "application/x-www-form-urlencoded"}
        statuses[label] = request(port, "POST", path, raw, headers=headers)[0]
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    for sock in slow:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    closed_after = []
    for sock in slow:
        sock.settimeout(30)
        t0 = time.perf_counter()
        with contextlib.suppress(OSError):
            sock.recv(1)
        closed_after.append(time.perf_counter() - t0)
        sock.close()
    ended = time.perf_counter()
    done.set()
    streamer.join(120)
    inside = [began, *[t for t in chunk_times if began <= t <= ended], ended]
    gaps = [b - a for a, b in itertools.pairwise(inside)]
    return {"statuses": statuses, "slowloris_closed_within_s": max(closed_after),
            "stream_longest_pause_s": max(gaps), "seconds": ended - began}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--soak", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()

    from mlxk2.ops.demo import install_demo

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "hub").mkdir()
        install_demo(root=home / "hub")
        port = free_port()
        proc = start_server(home, port)
        poller = HealthPoller(port)
        try:
            seen = fuzz(port, args.examples)
            fuzz_health = poller.worst()
            print(f"fuzzing ({args.examples} examples per operation, mode and key):")
            by_label: dict[str, Counter[int]] = {}
            for (label, _operation, status), count in seen.items():
                by_label.setdefault(label, Counter())[status] += count
            for label, statuses in sorted(by_label.items()):
                print(f"  {label:<20} {sum(statuses.values()):>6} requests  "
                      + "  ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
            fives = sum(n for (_, _, s), n in seen.items() if s >= 500)
            print(f"  total {sum(seen.values())} requests, {fives} with a 5xx")
            print(f"  worst /health latency: {fuzz_health[0] * 1000:.1f} ms "
                  f"({fuzz_health[1]} polls)")

            poller.reset()
            figures = soak(port, proc.pid, args.soak, args.workers)
            soak_health = poller.worst()
            print(f"soak: {figures['requests']} mixed requests from {figures['workers']} "
                  f"workers in {figures['seconds']:.1f} s; unexpected answers: "
                  f"{figures['unexpected'] or 'none'}")
            print(f"  /metrics counted {figures['counted_by_metrics']:.0f} of them; "
                  f"active {figures['active_after']:.0f}, queued {figures['queue_after']:.0f} "
                  "afterwards")
            print(f"  server RSS {figures['rss_before'] / 2**20:.0f} MiB before, "
                  f"{figures['rss_after'] / 2**20:.0f} MiB after")
            print(f"  worst /health latency: {soak_health[0] * 1000:.1f} ms "
                  f"({soak_health[1]} polls)")

            poller.reset()
            result = hostile(port)
            hostile_health = poller.worst()
            print("hostile inputs, while one stream runs:")
            for label, status in result["statuses"].items():
                print(f"  {label:<28} {status}")
            print(f"  20 connections that never finish their headers: all closed within "
                  f"{result['slowloris_closed_within_s']:.1f} s")
            print(f"  the stream's longest pause: {result['stream_longest_pause_s'] * 1000:.0f} ms"
                  f" over {result['seconds']:.1f} s")
            print(f"  worst /health latency: {hostile_health[0] * 1000:.1f} ms "
                  f"({hostile_health[1]} polls)")
        finally:
            poller.stop.set()
            proc.terminate()
            proc.wait(60)


if __name__ == "__main__":
    main()
