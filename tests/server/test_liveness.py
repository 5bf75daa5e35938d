"""Huge prompts are refused without stalling the server: /health and running streams go on."""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time

from tests.fixtures.models import CHAT
from tests.fixtures.server import LiveServer, raw_request

#: The brief for a live server: /health answers within this while hostile requests run.
HEALTH_BUDGET_S = 0.2
#: A running stream may pause at most this long between chunks meanwhile.
STREAM_GAP_BUDGET_S = 1.0


def _hostile_requests(live: LiveServer) -> list[tuple[str, dict[str, object]]]:
    long_text = "hello world, this is a test. " * 134_000  # 3.9 MB, under the body limit
    assert len(long_text) < live.config.max_body_bytes
    return [
        ("/v1/completions", {"model": CHAT, "prompt": long_text, "max_tokens": 4}),
        ("/v1/chat/completions", {"model": CHAT, "max_tokens": 4, "messages": [
            {"role": "user", "content": long_text[:1_000_000]}]}),
    ]


def _stream_chunk_times(live: LiveServer, stops: list[int], times: list[float],
                        started: threading.Event) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", live.config.port, timeout=60)
    body = {"model": CHAT, "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": 2000, "stream": True,
            "logit_bias": {str(t): -100 for t in stops}}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    for line in response:
        if line.startswith(b"data: "):
            times.append(time.perf_counter())
            if len(times) == 5:
                started.set()
            if line.startswith(b"data: [DONE]"):
                break
    conn.close()


def test_health_and_a_running_stream_stay_live_while_huge_prompts_are_refused(
        live, chat_tokenizer):
    from mlxk2.engine.load import stop_token_ids

    stops = sorted(stop_token_ids(chat_tokenizer))
    chunk_times: list[float] = []
    started = threading.Event()
    streamer = threading.Thread(target=_stream_chunk_times,
                                args=(live, stops, chunk_times, started))
    streamer.start()
    assert started.wait(60)

    hostile_over = threading.Event()
    health_latencies: list[float] = []

    def poll_health() -> None:
        while not hostile_over.is_set():
            began = time.perf_counter()
            assert raw_request(live.url, "GET", "/health").status == 200
            health_latencies.append(time.perf_counter() - began)
            time.sleep(0.02)

    poller = threading.Thread(target=poll_health)
    poller.start()
    window_start = time.perf_counter()
    try:
        for _ in range(3):
            for path, body in _hostile_requests(live):
                response = raw_request(live.url, "POST", path, body)
                assert response.status == 400, response.body[:300]
                error = response.json()["error"]
                assert error["code"] == "context_length_exceeded"
                assert error["param"] == ("prompt" if "prompt" in body else "messages")
    finally:
        window_end = time.perf_counter()
        hostile_over.set()
        poller.join(60)
    streamer.join(120)

    assert health_latencies and max(health_latencies) < HEALTH_BUDGET_S, max(health_latencies)
    during = [t for t in chunk_times if window_start <= t <= window_end]
    assert during, "the stream produced nothing while huge prompts were refused"
    edges = [window_start, *during, window_end]
    gaps = [b - a for a, b in itertools.pairwise(edges)]
    assert max(gaps) < STREAM_GAP_BUDGET_S, max(gaps)


def test_a_long_prompt_that_fits_is_still_served(live):
    text = "word " * 500  # about 1500 tokens of a 2048-token context
    response = raw_request(live.url, "POST", "/v1/completions",
                           {"model": CHAT, "prompt": text, "max_tokens": 3})
    assert response.status == 200, response.body[:300]
    assert response.json()["usage"]["prompt_tokens"] > 1000
    too_long = raw_request(live.url, "POST", "/v1/completions",
                           {"model": CHAT, "prompt": text * 2, "max_tokens": 3})
    assert too_long.status == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"
