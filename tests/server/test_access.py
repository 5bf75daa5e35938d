"""API key, CORS and the Prometheus endpoint."""

from __future__ import annotations

import openai
import pytest

from tests.fixtures.models import CHAT
from tests.fixtures.server import LiveServer, raw_request

ORIGIN = "http://chat.example"
BODY = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def guarded(make_server) -> LiveServer:
    return make_server(api_key="s3cret-key", cors_origins=(ORIGIN,))


def test_v1_and_metrics_need_the_bearer_key(guarded):
    for method, path, body in (("POST", "/v1/chat/completions", BODY),
                               ("GET", "/v1/models", None), ("GET", "/metrics", None)):
        missing = raw_request(guarded.url, method, path, body=body)
        wrong = raw_request(guarded.url, method, path, body=body,
                            headers={"Authorization": "Bearer nope"})
        for response in (missing, wrong):
            assert response.status == 401
            assert response.json()["error"]["type"] == "authentication_error"
    ok = raw_request(guarded.url, "GET", "/metrics",
                     headers={"Authorization": "Bearer s3cret-key"})
    assert ok.status == 200


def test_openai_client_with_the_key_works_and_without_fails(guarded):
    reply = guarded.client().chat.completions.create(**BODY)
    assert reply.usage.completion_tokens == 2
    with pytest.raises(openai.AuthenticationError):
        guarded.client(api_key="wrong").chat.completions.create(**BODY)


def test_health_stays_open_with_a_key(guarded):
    assert raw_request(guarded.url, "GET", "/health").status == 200


def test_cors_allows_the_configured_origin_only(guarded):
    preflight = raw_request(guarded.url, "OPTIONS", "/v1/chat/completions", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    denied = raw_request(guarded.url, "GET", "/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in denied.headers
    rejected = raw_request(guarded.url, "POST", "/v1/chat/completions", body=BODY,
                           headers={"Origin": ORIGIN})
    assert rejected.status == 401
    assert rejected.headers["access-control-allow-origin"] == ORIGIN


def test_cors_is_off_by_default(live):
    response = raw_request(live.url, "GET", "/health", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in response.headers
    preflight = raw_request(live.url, "OPTIONS", "/v1/chat/completions", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def _metric(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix))


def test_metrics_count_requests_tokens_and_latency(make_server):
    server = make_server()
    client = server.client()
    client.chat.completions.create(**{**BODY, "max_tokens": 5})
    stream = client.chat.completions.create(**{**BODY, "max_tokens": 4}, stream=True)
    assert list(stream)
    raw_request(server.url, "POST", "/v1/chat/completions", body=b"{")
    response = raw_request(server.url, "GET", "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.body.decode()
    ok = 'mlxk2_requests_total{endpoint="/v1/chat/completions",status="200"}'
    bad = 'mlxk2_requests_total{endpoint="/v1/chat/completions",status="400"}'
    assert _metric(text, ok) == 2
    assert _metric(text, bad) == 1
    assert _metric(text, "mlxk2_generated_tokens_total") == 9
    assert _metric(text, "mlxk2_time_to_first_token_seconds_count") == 2
    assert _metric(text, "mlxk2_tokens_per_second_count") == 2
    assert _metric(text, "mlxk2_queue_depth") == 0
    assert _metric(text, "mlxk2_loaded_models") == 1
