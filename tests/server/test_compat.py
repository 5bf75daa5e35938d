"""What real front ends send: null defaults, short model ids, strict roles and seeds."""

from __future__ import annotations

import pytest

from tests.fixtures.models import CHAT
from tests.fixtures.server import raw_request

HELLO = [{"role": "user", "content": "Hello"}]


def test_null_n_and_stream_mean_the_defaults(live) -> None:
    body = {"model": CHAT, "messages": HELLO, "max_tokens": 2, "n": None, "stream": None}
    response = raw_request(live.url, "POST", "/v1/chat/completions", body)
    assert response.status == 200
    assert response.json()["object"] == "chat.completion"


def test_a_model_is_found_by_the_names_completions_accept(live) -> None:
    short = raw_request(live.url, "GET", "/v1/models/demo-chat")
    assert short.status == 200
    assert short.json()["id"] == CHAT
    assert raw_request(live.url, "GET", "/v1/models/no-such-model").status == 404


@pytest.mark.parametrize(("field", "value"), [
    ("seed", -1), ("seed", 2**64), ("messages", [{"role": "bogus", "content": "x"}]),
])
def test_out_of_range_fields_are_400_naming_the_field(live, field, value) -> None:
    body = {"model": CHAT, "messages": HELLO, "max_tokens": 2, field: value}
    response = raw_request(live.url, "POST", "/v1/chat/completions", body)
    assert response.status == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"].startswith(field)


def test_folder_paths_a_client_names_are_unknown_models(live, tmp_path) -> None:
    for spec in ("/etc", str(tmp_path), "/no/such/folder"):
        body = {"model": spec, "messages": HELLO, "max_tokens": 2}
        response = raw_request(live.url, "POST", "/v1/chat/completions", body)
        assert response.status == 404
        assert response.json()["error"]["message"] == f"The model '{spec}' does not exist."
