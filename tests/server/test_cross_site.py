"""Web pages on other sites cannot make the local server work: Origin, Host and Content-Type."""

from __future__ import annotations

import json

import pytest

from mlxk2.server.browsers import is_loopback
from tests.fixtures.embedding import MINILM
from tests.fixtures.models import CHAT
from tests.fixtures.server import LiveServer, api_error, raw_request

BODY = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
TRUSTED = "http://app.example"


def _generated_tokens(live: LiveServer) -> float:
    text = raw_request(live.url, "GET", "/metrics").body.decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mlxk2_generated_tokens_total"))


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", None, "application/jsonx", "json",
])
def test_a_post_body_not_declared_as_json_is_a_415_and_generates_nothing(live, content_type):
    before = _generated_tokens(live)
    headers = {} if content_type is None else {"Content-Type": content_type}
    for path in ("/v1/chat/completions", "/v1/completions"):
        response = raw_request(live.url, "POST", path, json.dumps(BODY).encode(),
                               headers=headers)
        assert response.status == 415, response.body
        assert response.json()["error"]["code"] == "unsupported_media_type"
    assert _generated_tokens(live) == before


def test_json_with_a_charset_is_json(live):
    response = raw_request(live.url, "POST", "/v1/chat/completions", json.dumps(BODY).encode(),
                           headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert response.status == 200, response.body


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1",
                                    "https://127.0.0.1:1", "http://localhost.evil.example"])
def test_a_page_from_another_origin_is_refused_before_any_work(live, origin):
    before = _generated_tokens(live)
    for method, path, body in (("POST", "/v1/chat/completions", BODY),
                               ("GET", "/v1/models", None)):
        response = raw_request(live.url, method, path, body, headers={"Origin": origin})
        assert response.status == 403, (origin, response.body)
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("permission_error", "origin_not_allowed")
        assert "--cors-origin" in error["message"]
    assert _generated_tokens(live) == before


def test_the_servers_own_pages_are_same_origin(live):
    own = f"http://127.0.0.1:{live.config.port}"
    response = raw_request(live.url, "POST", "/v1/chat/completions", BODY,
                           headers={"Origin": own})
    assert response.status == 200, response.body


def test_a_rebound_hostname_is_refused_on_loopback(live):
    port = live.config.port
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    for headers in (rebound, {"Host": rebound["Host"]}):
        response = raw_request(live.url, "POST", "/v1/chat/completions", BODY, headers=headers)
        assert response.status == 403, response.body
    local = raw_request(live.url, "GET", "/health", headers={"Host": f"localhost:{port}"})
    assert local.status == 200


def test_a_cors_origin_is_trusted_and_others_are_not(make_server):
    server = make_server(cors_origins=(TRUSTED,))
    allowed = raw_request(server.url, "POST", "/v1/chat/completions", BODY,
                          headers={"Origin": TRUSTED})
    assert allowed.status == 200, allowed.body
    assert allowed.headers["access-control-allow-origin"] == TRUSTED
    other = raw_request(server.url, "POST", "/v1/chat/completions", BODY,
                        headers={"Origin": "http://evil.example"})
    assert other.status == 403
    assert "access-control-allow-origin" not in other.headers


def test_cors_origin_star_trusts_every_page(make_server):
    server = make_server(cors_origins=("*",))
    response = raw_request(server.url, "POST", "/v1/chat/completions", BODY,
                           headers={"Origin": "http://anything.example"})
    assert response.status == 200, response.body


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("localhost", True), ("::1", True),
    ("[::1]", True), ("app.localhost", True), ("0.0.0.0", False), ("192.168.1.2", False),
    ("example.com", False), ("localhost.example.com", False),
])
def test_loopback_names(host, loopback):
    assert is_loopback(host) is loopback


#: Endpoints added beside chat and completions, each with a small valid body.
OTHER_POSTS = {
    "/v1/responses": {"model": CHAT, "input": "hi", "max_output_tokens": 2},
    "/v1/messages": {"model": CHAT, "messages": [{"role": "user", "content": "hi"}],
                     "max_tokens": 2},
    "/v1/messages/count_tokens": {"model": CHAT, "messages": [{"role": "user",
                                                                "content": "hi"}]},
    "/v1/embeddings": {"model": MINILM, "input": "hi"},
    f"/v1/models/{CHAT}/load": {"keep_alive": "5m"},
    f"/v1/models/{CHAT}/unload": {"keep_alive": 0},
}


def _chat_is_loaded(live: LiveServer) -> bool:
    return CHAT in {m["id"] for m in raw_request(live.url, "GET", "/v1/ps").json()["data"]}


@pytest.mark.parametrize("path", list(OTHER_POSTS))
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_every_post_endpoint_refuses_a_body_not_declared_as_json(live_with_encoder, path,
                                                                 content_type):
    assert raw_request(live_with_encoder.url, "POST", f"/v1/models/{CHAT}/load").status == 200
    before = _generated_tokens(live_with_encoder)
    response = raw_request(live_with_encoder.url, "POST", path,
                           json.dumps(OTHER_POSTS[path]).encode(),
                           headers={"Content-Type": content_type})
    error = api_error(response, 415, path)
    if not path.startswith("/v1/messages"):
        assert error["code"] == "unsupported_media_type"
    assert _generated_tokens(live_with_encoder) == before
    assert _chat_is_loaded(live_with_encoder)  # a form post cannot unload a model


@pytest.mark.parametrize("path", list(OTHER_POSTS))
def test_every_post_endpoint_refuses_a_foreign_page(live_with_encoder, path):
    assert raw_request(live_with_encoder.url, "POST", f"/v1/models/{CHAT}/load").status == 200
    before = _generated_tokens(live_with_encoder)
    response = raw_request(live_with_encoder.url, "POST", path, OTHER_POSTS[path],
                           headers={"Origin": "http://evil.example"})
    error = api_error(response, 403, path)
    assert error["type"] == "permission_error"
    assert "--cors-origin" in error["message"]
    assert _generated_tokens(live_with_encoder) == before
    assert _chat_is_loaded(live_with_encoder)
