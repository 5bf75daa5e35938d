"""The published OpenAPI document, and requests generated from it: no input earns a 5xx.

schemathesis turns the server's own ``/openapi.json`` into hypothesis strategies:
requests that fit the schema (positive) and requests that break it (negative),
sent to a real server with the tiny model. The number of examples is bounded so
that the suite stays fast; ``benchmarks/bench_hostile.py`` runs more.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.fixtures.models import CHAT
from tests.fixtures.server import LiveServer, raw_request

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
#: Generated requests per operation and mode in the test suite.
EXAMPLES = 25


@pytest.fixture(scope="module")
def fuzzed(make_server) -> LiveServer:
    """A server with an API key and 3-token answers, so generated requests stay cheap."""
    return make_server(api_key=KEY, max_tokens=3)


def fuzz(live: LiveServer, mode: Any, examples: int, derandomize: bool = True,
         headers: dict[str, str] | None = None) -> Counter[tuple[str, int]]:
    """Send ``examples`` generated requests per operation; count them by operation and
    status, and fail at the first 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable

    doc = raw_request(live.url, "GET", "/openapi.json", headers=AUTH).json()
    schema = schemathesis.openapi.from_dict(doc)
    seen: Counter[tuple[str, int]] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=examples, deadline=None, database=None,
                  derandomize=derandomize, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode), served_model=st.booleans())
        def call(case: Any, served_model: bool) -> None:
            if served_model and isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = CHAT  # so that generation itself gets fuzzed too
            response = case.call(base_url=live.url, headers=headers or AUTH, timeout=60)
            seen[(case.operation.label, response.status_code)] += 1
            assert response.status_code < 500, (case.as_curl_command(), response.text[:500])

        try:
            call()
        except Unsatisfiable:  # no parameters or body to break (GET /health)
            assert not mode.is_positive
    return seen


def test_the_published_schema_declares_every_route_and_its_request_body(fuzzed):
    assert raw_request(fuzzed.url, "GET", "/openapi.json").status == 401  # behind the key
    doc = raw_request(fuzzed.url, "GET", "/openapi.json", headers=AUTH).json()
    assert set(doc["paths"]) == {
        "/health", "/metrics", "/v1/models", "/v1/models/{model_id}", "/v1/ps",
        "/v1/models/{model_id}/load", "/v1/models/{model_id}/unload",
        "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
        "/v1/responses", "/v1/responses/{response_id}",
        "/v1/messages", "/v1/messages/count_tokens"}
    schemas = doc["components"]["schemas"]
    for path, model in (("/v1/chat/completions", "ChatCompletionRequest"),
                        ("/v1/completions", "CompletionRequest"),
                        ("/v1/embeddings", "EmbeddingsRequest"),
                        ("/v1/responses", "ResponsesRequest"),
                        ("/v1/messages", "MessagesRequest"),
                        ("/v1/messages/count_tokens", "CountTokensRequest")):
        post = doc["paths"][path]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
        assert {"400", "401", "403", "415"} <= set(post["responses"])
        if path.endswith(("completions", "responses", "messages")):
            assert "text/event-stream" in post["responses"]["200"]["content"]
    assert doc["paths"]["/v1/messages"]["post"]["responses"]["400"]["content"][
        "application/json"]["schema"] == {"$ref": "#/components/schemas/AnthropicError"}
    assert "messages" in schemas["ChatCompletionRequest"]["required"]
    assert "prompt" in schemas["CompletionRequest"]["required"]
    assert {"ChatMessage", "TextPart", "ChatCompletion", "ErrorResponse"} <= set(schemas)


def test_a_request_the_schema_describes_is_served(fuzzed):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=10, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(content=st.text(min_size=1, max_size=200), temperature=st.floats(0, 2))
    def ask(content: str, temperature: float) -> None:
        response = raw_request(fuzzed.url, "POST", "/v1/chat/completions", {
            "model": "mlxk2/demo-chat", "temperature": temperature,
            "messages": [{"role": "user", "content": content}]}, headers=AUTH)
        assert response.status == 200, response.body[:300]

    ask()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_generated_requests_never_get_a_server_error(fuzzed, mode):
    from schemathesis import GenerationMode

    seen = fuzz(fuzzed, GenerationMode(mode), EXAMPLES)
    assert sum(seen.values()) >= EXAMPLES  # requests were really sent
    assert all(status < 500 for _, status in seen)
    if mode == "positive":  # some generated requests made it through to generation
        assert seen[("POST /v1/chat/completions", 200)] + seen[("POST /v1/completions", 200)]


def test_generated_requests_without_the_key_are_all_refused(fuzzed):
    from schemathesis import GenerationMode

    seen = fuzz(fuzzed, GenerationMode.POSITIVE, 5, headers={"Authorization": "Bearer x"})
    assert {status for (label, status) in seen if "/v1/" in label} == {401}
