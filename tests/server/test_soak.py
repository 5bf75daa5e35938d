"""A short soak: 200 mixed requests, some malformed, all answered, memory flat."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mlxk2.server.memory import rss_bytes
from tests.fixtures.models import BASE, CHAT
from tests.fixtures.server import LiveServer, raw_request, sse_events

CHAT_PATH = "/v1/chat/completions"
TEXT_PATH = "/v1/completions"


def _request(index: int) -> tuple[str, Any, int]:
    """The ``index``-th request of the mix: (path, body, expected status)."""
    rng = random.Random(index)
    kind = index % 8
    tokens = rng.randint(1, 12)
    message = [{"role": "user", "content": f"Question number {index}?"}]
    if kind in (0, 1):
        return CHAT_PATH, {"model": CHAT, "messages": message, "max_tokens": tokens,
                           "stream": kind == 1}, 200
    if kind in (2, 3):
        return TEXT_PATH, {"model": BASE, "prompt": f"Story {index}:", "max_tokens": tokens,
                           "stream": kind == 3, "temperature": 0.7, "seed": index}, 200
    if kind == 4:
        return CHAT_PATH, b'{"model": "' + CHAT.encode() + b'", "messages": [', 400
    if kind == 5:
        return CHAT_PATH, {"model": CHAT, "messages": message, "max_tokens": "many"}, 400
    if kind == 6:
        return CHAT_PATH, {"model": "nobody/missing", "messages": message}, 404
    return CHAT_PATH, {"model": CHAT, "messages": message, "max_tokens": tokens,
                       "stop": ["e", "the"], "stream": True}, 200


def _send(live: LiveServer, index: int) -> tuple[int, int]:
    path, body, expected = _request(index)
    if isinstance(body, dict) and body.get("stream"):
        events = sse_events(live.url, path, body)
        assert events[-1] == "[DONE]"
        finishes = [c["choices"][0]["finish_reason"] for c in map(json.loads, events[:-1])
                    if c["choices"]]
        assert finishes[-1] in ("stop", "length")
        return 200, expected
    response = raw_request(live.url, "POST", path, body=body,
                           headers={"Content-Type": "application/json"})
    document = response.json()
    if response.status == 200:
        assert document["choices"][0]["finish_reason"] in ("stop", "length")
        assert document["usage"]["completion_tokens"] <= body["max_tokens"]
    else:
        assert set(document["error"]) == {"message", "type", "param", "code"}
    return response.status, expected


def _burst(live: LiveServer, indices: range) -> list[tuple[int, int]]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda i: _send(live, i), indices))


def test_two_hundred_mixed_requests_are_all_answered_with_flat_memory(make_server):
    live = make_server(max_concurrency=4, max_queue=16)
    _burst(live, range(1000, 1040))
    before = rss_bytes()
    outcomes = _burst(live, range(200))
    after = rss_bytes()
    assert len(outcomes) == 200
    assert [got for got, _ in outcomes] == [want for _, want in outcomes]
    health = raw_request(live.url, "GET", "/health").json()
    assert all(m["active_requests"] == 0 for m in health["models"])
    assert before is not None and after is not None
    assert after - before < 48 * 1024 * 1024
