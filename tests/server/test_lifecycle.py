"""Seeing and steering the model lifecycle: /v1/models fields, /v1/ps, load, unload,
and a request's ``keep_alive``, on a real server with the demo models."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from mlxk2.cache.layout import store_snapshot
from mlxk2.server import ModelProvider, ServerConfig, Worker
from tests.fixtures.embedding import MINILM, minilm_folder
from tests.fixtures.models import BASE, CHAT, CHAT_4BIT
from tests.fixtures.server import LiveServer, connection, free_port, raw_request, start_server

KEY = "lifecycle-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def steered(make_server) -> LiveServer:
    """Nothing preloaded, two models at once, idle models unload after 5 minutes."""
    return make_server(preload=None, api_key=KEY, keep_alive=300.0, max_loaded_models=2)


def _get(live: LiveServer, path: str) -> Any:
    response = raw_request(live.url, "GET", path, headers=AUTH)
    assert response.status == 200, response.body
    return response.json()


def _post(live: LiveServer, path: str, body: Any = None) -> Any:
    return raw_request(live.url, "POST", path, body=body, headers=AUTH)


def _ps(live: LiveServer) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in _get(live, "/v1/ps")["data"]}


def _wait_for(predicate: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.05)


def _seconds_until(stamp: str) -> float:
    moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return (moment - datetime.now(timezone.utc)).total_seconds()


def test_model_items_carry_capabilities_context_and_load_state(steered, demo_cache):
    assert _post(steered, f"/v1/models/{BASE}/unload").status == 200
    assert _post(steered, f"/v1/models/{CHAT}/load", {"keep_alive": "5m"}).status == 200
    items = {item["id"]: item for item in _get(steered, "/v1/models")["data"]}
    assert set(items) == {CHAT, CHAT_4BIT, BASE}
    chat, base = items[CHAT], items[BASE]
    assert chat["capabilities"] == ["text-generation", "chat"]
    assert base["capabilities"] == ["text-generation"]
    assert chat["context_length"] == json.loads(
        (demo_cache.paths[CHAT] / "config.json").read_text())["max_position_embeddings"]
    assert chat["size_bytes"] > 0
    assert chat["loaded"] is True and base["loaded"] is False
    assert "memory_bytes" not in base and "expires_at" not in base
    assert chat["memory_bytes"] > 0
    assert 290 < _seconds_until(chat["expires_at"]) <= 300
    by_short_name = _get(steered, "/v1/models/demo-chat")
    assert (by_short_name["id"], by_short_name["loaded"]) == (CHAT, True)
    assert by_short_name["memory_bytes"] == chat["memory_bytes"]


def test_load_then_ps_shows_it_then_unload_drops_it(steered):
    loaded = _post(steered, f"/v1/models/{BASE}/load", {"keep_alive": "30m"})
    assert loaded.status == 200
    assert loaded.json()["loaded"] is True
    ps = _ps(steered)
    assert BASE in ps
    assert ps[BASE]["keep_alive_seconds"] == 1800
    assert (ps[BASE]["active_requests"], ps[BASE]["queued_requests"]) == (0, 0)
    assert 1790 < _seconds_until(ps[BASE]["expires_at"]) <= 1800
    dropped = _post(steered, f"/v1/models/{BASE}/unload")
    assert dropped.status == 200
    assert dropped.json() == {"id": BASE, "object": "model", "was_loaded": True,
                              "loaded": False}
    assert BASE not in _ps(steered)
    again = _post(steered, f"/v1/models/{BASE}/unload").json()
    assert (again["was_loaded"], again["loaded"]) == (False, False)


def test_keep_alive_never_has_no_expiry(steered):
    assert _post(steered, f"/v1/models/{CHAT}/load", {"keep_alive": -1}).status == 200
    chat = _ps(steered)[CHAT]
    assert (chat["keep_alive_seconds"], chat["expires_at"]) == (None, None)


def test_each_lifecycle_endpoint_needs_the_api_key(steered):
    for method, path in (("GET", "/v1/ps"), ("POST", f"/v1/models/{CHAT}/load"),
                         ("POST", f"/v1/models/{CHAT}/unload")):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = raw_request(steered.url, method, path, headers=headers)
            assert response.status == 401, (method, path, headers)
            assert response.json()["error"]["code"] == "invalid_api_key"


def test_load_refuses_unknown_fields_bad_durations_and_unserved_folders(steered, tmp_path):
    unknown = _post(steered, f"/v1/models/{CHAT}/load", {"keepalive": "5m"})
    assert unknown.status == 400
    assert unknown.json()["error"]["param"] == "keepalive"
    bad = _post(steered, f"/v1/models/{CHAT}/load", {"keep_alive": "soon"})
    assert bad.status == 400
    assert bad.json()["error"]["param"] == "keep_alive"
    for spec in (str(tmp_path), "nobody/missing"):
        for action in ("load", "unload"):
            response = _post(steered, f"/v1/models/{spec}/{action}")
            assert response.status == 404, (spec, action)
            assert response.json()["error"]["code"] == "model_not_found"


def test_keep_alive_zero_on_a_request_unloads_the_model_after_it(steered):
    body = {"model": BASE, "prompt": "Once upon", "max_tokens": 3, "keep_alive": 0}
    answer = _post(steered, "/v1/completions", body)
    assert answer.status == 200
    assert answer.json()["usage"]["completion_tokens"] == 3
    _wait_for(lambda: BASE not in _ps(steered), seconds=5)


def test_a_request_keep_alive_sets_the_model_expiry(steered):
    body = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "keep_alive": "10m"}
    assert _post(steered, "/v1/chat/completions", body).status == 200
    assert _ps(steered)[CHAT]["keep_alive_seconds"] == 600
    bad = _post(steered, "/v1/chat/completions", {**body, "keep_alive": True})
    assert bad.status == 400
    assert bad.json()["error"]["param"] == "keep_alive"


def test_busy_model_shows_its_request_and_unloads_when_it_ends(steered):
    assert _post(steered, f"/v1/models/{CHAT}/load").status == 200
    conn = connection(steered.url)
    body = {"model": CHAT, "messages": [{"role": "user", "content": "Go on."}],
            "max_tokens": 4000, "stream": True}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", **AUTH})
    response = conn.getresponse()
    try:
        assert response.readline().startswith(b"data: ")
        busy = _ps(steered)[CHAT]
        assert (busy["active_requests"], busy["expires_at"]) == (1, None)
        pending = _post(steered, f"/v1/models/{CHAT}/unload")
        assert pending.status == 202
        assert pending.json()["loaded"] is True
        assert CHAT in _ps(steered)
    finally:
        conn.close()
    _wait_for(lambda: CHAT not in _ps(steered))


@pytest.fixture(scope="module")
def with_encoder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server over a cache that holds the MiniLM embedding model."""
    root = tmp_path_factory.mktemp("encoder_hub")
    store_snapshot(root, MINILM, minilm_folder())
    config = ServerConfig(port=free_port(), keep_alive=None, api_key=KEY)
    worker = Worker()
    worker.start()
    live, stop = start_server(config, ModelProvider(worker, keep_alive=None, root=root))
    yield live
    stop()


def test_embedding_models_load_show_and_honour_a_request_keep_alive(with_encoder):
    loaded = _post(with_encoder, f"/v1/models/{MINILM}/load")
    assert loaded.status == 200, loaded.body
    item = _ps(with_encoder)[MINILM]
    assert item["capabilities"] == ["embeddings"]
    assert (item["active_requests"], item["queued_requests"], item["expires_at"]) == (0, 0, None)
    answer = _post(with_encoder, "/v1/embeddings",
                   {"model": MINILM, "input": "a cat", "keep_alive": 0})
    assert answer.status == 200, answer.body
    _wait_for(lambda: MINILM not in _ps(with_encoder), seconds=5)
