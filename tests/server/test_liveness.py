"""Huge prompts are refused without stalling the server: /health and running streams go on.

Every endpoint that builds a prompt (chat, completions, Responses, Messages and
count_tokens) refuses one that cannot fit the context from its length, before
tokenising it; embeddings read a text only as far as the model's token limit reaches.
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time

from tests.fixtures.models import CHAT
from tests.fixtures.server import LiveServer, RawResponse, api_error, raw_request

#: The brief for a live server: /health answers within this while hostile requests run
#: (at the 95th percentile: on a shared 2-core machine a single poll can wait for a core).
HEALTH_BUDGET_S = 0.2
#: No /health poll may wait this long: a loop blocked by tokenising takes seconds.
HEALTH_WORST_S = 1.0
#: A running stream may pause at most this long between chunks meanwhile.
STREAM_GAP_BUDGET_S = 1.0
#: Refusing a prompt from its length, without tokenising it, takes less than this
#: (tokenising 3.9 MB takes seconds).
REFUSAL_BUDGET_S = 1.0


def _hostile_requests(live: LiveServer) -> list[tuple[str, dict[str, object], str]]:
    """Prompts far beyond the context on every endpoint that builds one: (path, body,
    the field the error names)."""
    long_text = "hello world, this is a test. " * 134_000  # 3.9 MB, under the body limit
    assert len(long_text) < live.config.max_body_bytes
    hello = [{"role": "user", "content": "hi"}]
    return [
        ("/v1/completions", {"model": CHAT, "prompt": long_text, "max_tokens": 4}, "prompt"),
        ("/v1/chat/completions", {"model": CHAT, "max_tokens": 4, "messages": [
            {"role": "user", "content": long_text[:1_000_000]}]}, "messages"),
        ("/v1/chat/completions", {"model": CHAT, "max_tokens": 4, "messages": hello,
                                  "tools": [{"type": "function", "function": {
                                      "name": "f", "description": long_text}}]}, "messages"),
        ("/v1/responses", {"model": CHAT, "input": long_text}, "messages"),
        ("/v1/responses", {"model": CHAT, "input": "hi", "instructions": long_text}, "messages"),
        ("/v1/responses", {"model": CHAT, "input": [
            {"type": "function_call", "call_id": "c", "name": "f",
             "arguments": json.dumps({"a": long_text[:2_000_000]})},
            {"type": "function_call_output", "call_id": "c", "output": "ok"}]}, "messages"),
        ("/v1/messages", {"model": CHAT, "max_tokens": 4, "system": long_text,
                          "messages": hello}, "messages"),
        ("/v1/messages", {"model": CHAT, "max_tokens": 4, "messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                               "input": {"a": long_text[:2_000_000]}}]},
            *hello]}, "messages"),
        ("/v1/messages/count_tokens", {"model": CHAT, "messages": [
            {"role": "user", "content": long_text}]}, "messages"),
    ]


def _assert_context_exceeded(response: RawResponse, path: str, param: str) -> None:
    """A 400 refused from the prompt's length, in the endpoint's own error shape."""
    error = api_error(response, 400, path)
    assert "context holds" in error["message"], error
    if not path.startswith("/v1/messages"):  # Anthropic's shape has no code or param
        assert (error["code"], error["param"]) == ("context_length_exceeded", param)


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
            for path, body, param in _hostile_requests(live):
                began = time.perf_counter()
                response = raw_request(live.url, "POST", path, body)
                _assert_context_exceeded(response, path, param)
                assert time.perf_counter() - began < REFUSAL_BUDGET_S, path
    finally:
        window_end = time.perf_counter()
        hostile_over.set()
        poller.join(60)
    streamer.join(120)

    assert len(health_latencies) >= 10
    ordered = sorted(health_latencies)
    assert ordered[int(len(ordered) * 0.95)] < HEALTH_BUDGET_S, ordered[-10:]
    assert ordered[-1] < HEALTH_WORST_S, ordered[-10:]
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


def test_a_multi_megabyte_embedding_input_is_cut_before_tokenising(live_with_encoder):
    from tests.fixtures.embedding import MINILM

    long_text = "hello world, this is a test. " * 134_000
    head = long_text[:5000]  # about 1,400 tokens: cut to 256 as well

    def embed(texts: list[str]) -> RawResponse:
        response = raw_request(live_with_encoder.url, "POST", "/v1/embeddings",
                               {"model": MINILM, "input": texts})
        assert response.status == 200, response.body[:300]
        return response

    response = embed([long_text, head])  # the cut's speed: tests/engine/test_embed.py
    assert response.headers["x-mlxk2-truncated-inputs"] == "2"
    whole, cut = (item["embedding"] for item in response.json()["data"])
    assert whole == cut  # both are their first 256 tokens
