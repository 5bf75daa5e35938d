"""Inputs a client can send that once made the server answer 500: each is now a 4xx,
in the endpoint's own error shape (Anthropic's on ``/v1/messages*``, OpenAI's elsewhere)."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.embedding import MINILM
from tests.fixtures.models import CHAT
from tests.fixtures.server import api_error, raw_request

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"


def _chat(**extra: object) -> dict[str, object]:
    return {"model": CHAT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2,
            **extra}


def _post_raw(live, path: str, text: str):
    return raw_request(live.url, "POST", path, text.encode("utf-8"),
                       headers={"Content-Type": "application/json"})


def _assert_openai_error(response, status: int = 400, param: str | None = None) -> dict:
    assert response.status == status, response.body
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    return error


def _nested_body(depth: int, where: str) -> str:
    nested = "[" * depth + "]" * depth
    return {
        "body": nested,
        "ignored_field": json.dumps(_chat())[:-1] + f', "extra": {nested}}}',
        "messages": f'{{"model": "{CHAT}", "messages": {nested}}}',
    }[where]


@pytest.mark.parametrize("depth", [10_000, 100_000])
@pytest.mark.parametrize("where", ["body", "ignored_field", "messages"])
def test_json_nested_too_deeply_to_parse_is_a_400(live, depth, where):
    error = _assert_openai_error(_post_raw(live, CHAT_PATH, _nested_body(depth, where)))
    assert "nested too deeply" in error["message"]


def test_json_nested_deeply_but_parseable_is_judged_by_its_fields(live):
    _assert_openai_error(_post_raw(live, CHAT_PATH, _nested_body(900, "body")))
    _assert_openai_error(_post_raw(live, CHAT_PATH, _nested_body(900, "messages")),
                         param="messages.0")
    ignored = _post_raw(live, CHAT_PATH, _nested_body(900, "ignored_field"))
    assert ignored.status == 200, ignored.body


@pytest.mark.parametrize("key", ["²", "--5", "０", "٣", "-1", "1e3", " 5", "5 ", "", "1_0",
                                 "99999999999999999999"])
def test_a_logit_bias_key_that_is_not_ascii_digits_is_a_400(live, key):
    response = raw_request(live.url, "POST", CHAT_PATH, _chat(logit_bias={key: 1}))
    _assert_openai_error(response, param="logit_bias")


def test_ascii_digit_logit_bias_keys_still_work(live):
    response = raw_request(live.url, "POST", CHAT_PATH, _chat(logit_bias={"40": 5, "0": -1}))
    assert response.status == 200, response.body


@pytest.mark.parametrize(("path", "body_text"), [
    (COMPLETIONS_PATH, f'{{"model": "{CHAT}", "prompt": "a\\ud800b", "max_tokens": 2}}'),
    (COMPLETIONS_PATH, f'{{"model": "{CHAT}", "prompt": ["\\udfff"], "max_tokens": 2}}'),
    (CHAT_PATH, f'{{"model": "{CHAT}", "messages": [{{"role": "user", '
                f'"content": "x\\uDBFF"}}]}}'),
    (CHAT_PATH, '{"model": "demo\\ud800", "messages": [{"role": "user", "content": "x"}]}'),
    (CHAT_PATH, f'{{"model": "{CHAT}", "messages": [{{"role": "user", "content": "x"}}], '
                f'"stop": ["\\ud800"]}}'),
    (CHAT_PATH, f'{{"model": "{CHAT}", "messages": [{{"role": "user", "content": "x"}}], '
                f'"\\ud800": 1}}'),
])
def test_a_lone_surrogate_anywhere_in_the_body_is_a_400(live, path, body_text):
    error = _assert_openai_error(_post_raw(live, path, body_text))
    assert "surrogate" in error["message"]


def test_a_surrogate_pair_is_an_ordinary_character(live):
    text = f'{{"model": "{CHAT}", "prompt": "smile \\ud83d\\ude00", "max_tokens": 2}}'
    response = _post_raw(live, COMPLETIONS_PATH, text)
    assert response.status == 200, response.body


def test_a_model_name_no_model_has_is_a_404_whatever_it_contains(live):
    for name in ("no/such\u00e9", "x" * 5000, "../../etc/passwd", "\u0000"):
        response = raw_request(live.url, "POST", CHAT_PATH, _chat(model=name))
        assert response.status in (400, 404), (name, response.body)
        assert response.json()["error"]["type"] == "invalid_request_error"
    raw = raw_request(live.url, "GET", "/v1/models/%ED%A0%80")
    assert raw.status == 404


@pytest.mark.parametrize("keep_alive", [[], {"s": 1}, None])
@pytest.mark.parametrize("path", ["/v1/models/mlxk2/demo-chat/load", CHAT_PATH])
def test_a_keep_alive_that_is_not_a_duration_is_a_400_naming_it(live, path, keep_alive):
    body = {"keep_alive": keep_alive} if path.endswith("/load") else _chat(keep_alive=keep_alive)
    response = raw_request(live.url, "POST", path, body)
    if keep_alive is None:  # null means "the server's default"
        assert response.status == 200, response.body
    else:
        _assert_openai_error(response, param="keep_alive")


RESPONSES_PATH = "/v1/responses"
MESSAGES_PATH = "/v1/messages"
COUNT_PATH = "/v1/messages/count_tokens"
EMBEDDINGS_PATH = "/v1/embeddings"
LOAD_PATH = f"/v1/models/{CHAT}/load"
HELLO = [{"role": "user", "content": "Hi"}]
#: A small valid body for each endpoint added after chat and completions.
VALID: dict[str, dict[str, object]] = {
    RESPONSES_PATH: {"model": CHAT, "input": "Hi", "max_output_tokens": 2},
    MESSAGES_PATH: {"model": CHAT, "messages": HELLO, "max_tokens": 2},
    COUNT_PATH: {"model": CHAT, "messages": HELLO},
    EMBEDDINGS_PATH: {"model": MINILM, "input": "Hi"},
    LOAD_PATH: {"keep_alive": "5m"},
}
A_TOOL = {"name": "lookup", "input_schema": {"type": "object"}}


def _with_surrogate(path: str, body: dict[str, object]) -> tuple[str, str]:
    """``body`` as JSON text with each ``@`` written as the lone escape ``\\ud800``."""
    return path, json.dumps(body).replace("@", "\\ud800")


@pytest.mark.parametrize("path", list(VALID))
@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_json_nested_too_deeply_is_a_400_in_each_endpoints_shape(live_with_encoder, path,
                                                                  depth):
    nested = "[" * depth + "]" * depth
    for text in (nested, json.dumps(VALID[path])[:-1] + f', "extra": {nested}}}'):
        response = _post_raw(live_with_encoder, path, text)
        error = api_error(response, 400, path)
        assert "nested too deeply" in error["message"]


@pytest.mark.parametrize(("path", "text"), [
    _with_surrogate(RESPONSES_PATH, {"model": CHAT, "input": "x@"}),
    _with_surrogate(RESPONSES_PATH, {"model": "demo@", "input": "x"}),
    _with_surrogate(RESPONSES_PATH, {"model": CHAT, "input": "x", "instructions": "@"}),
    _with_surrogate(RESPONSES_PATH, {"model": CHAT, "input": "x", "tools": [
        {"type": "function", "name": "f@"}]}),
    _with_surrogate(RESPONSES_PATH, {"model": CHAT, "input": [
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": '{"a": "@"}'}]}),
    _with_surrogate(MESSAGES_PATH, {**VALID[MESSAGES_PATH], "messages": [
        {"role": "user", "content": "@"}]}),
    _with_surrogate(MESSAGES_PATH, {**VALID[MESSAGES_PATH], "model": "@"}),
    _with_surrogate(MESSAGES_PATH, {**VALID[MESSAGES_PATH], "system": "@"}),
    _with_surrogate(MESSAGES_PATH, {**VALID[MESSAGES_PATH], "tools": [
        {**A_TOOL, "name": "@"}]}),
    _with_surrogate(MESSAGES_PATH, {**VALID[MESSAGES_PATH], "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                           "input": {"q": "@"}}]}, *HELLO]}),
    _with_surrogate(COUNT_PATH, {**VALID[COUNT_PATH], "system": [{"type": "text",
                                                                  "text": "@"}]}),
    _with_surrogate(COUNT_PATH, {**VALID[COUNT_PATH], "model": "x@"}),
    _with_surrogate(EMBEDDINGS_PATH, {"model": MINILM, "input": ["fine", "@"]}),
    _with_surrogate(EMBEDDINGS_PATH, {"model": "@", "input": "x"}),
    _with_surrogate(LOAD_PATH, {"keep_alive": "@"}),
])
def test_a_lone_surrogate_is_a_400_on_every_endpoint(live_with_encoder, path, text):
    error = api_error(_post_raw(live_with_encoder, path, text), 400, path)
    assert "surrogate" in error["message"]


LONG_NUMBER = "9" * 5000  # beyond the digits Python converts to int


def _with_number(path: str, field: str, literal: str) -> tuple[str, str]:
    """The endpoint's valid body as JSON text with ``field`` set to the bare ``literal``."""
    return path, json.dumps({**VALID[path], field: "@"}).replace('"@"', literal)


@pytest.mark.parametrize(("path", "text"), [
    _with_number(RESPONSES_PATH, "temperature", "NaN"),
    _with_number(RESPONSES_PATH, "max_output_tokens", LONG_NUMBER),
    _with_number(MESSAGES_PATH, "max_tokens", "Infinity"),
    _with_number(MESSAGES_PATH, "top_p", "1e400"),
    _with_number(COUNT_PATH, "system", "-Infinity"),
    _with_number(EMBEDDINGS_PATH, "input", f"[{LONG_NUMBER}]"),
    _with_number(LOAD_PATH, "keep_alive", "NaN"),
    _with_number(LOAD_PATH, "keep_alive", "-1e999"),
])
def test_numbers_json_cannot_hold_are_a_400(live_with_encoder, path, text):
    error = api_error(_post_raw(live_with_encoder, path, text), 400, path)
    assert "Malformed JSON body" in error["message"]


@pytest.mark.parametrize(("path", "change"), [
    (RESPONSES_PATH, {"input": [1]}),
    (RESPONSES_PATH, {"input": {"role": "user"}}),
    (RESPONSES_PATH, {"instructions": ["a"]}),
    (RESPONSES_PATH, {"max_output_tokens": -1}),
    (RESPONSES_PATH, {"max_output_tokens": "9"}),
    (RESPONSES_PATH, {"input": [{"type": "reasoning", "content": 5}, *HELLO]}),
    (RESPONSES_PATH, {"input": [{"type": "reasoning", "summary": "text"}, *HELLO]}),
    (RESPONSES_PATH, {"tools": [{"type": "function", "name": "f"}],
                      "tool_choice": {"type": "function", "name": ["f"]}}),
    (RESPONSES_PATH, {"tool_choice": {"type": "function", "name": {"f": 1}}}),
    (MESSAGES_PATH, {"max_tokens": -5}),
    (MESSAGES_PATH, {"max_tokens": 2.5}),
    (MESSAGES_PATH, {"messages": [1]}),
    (MESSAGES_PATH, {"messages": "Hi"}),
    (MESSAGES_PATH, {"system": [1]}),
    (MESSAGES_PATH, {"messages": [{"role": ["user"], "content": "x"}]}),
    (MESSAGES_PATH, {"tools": [A_TOOL], "tool_choice": {"type": "tool", "name": ["lookup"]}}),
    (MESSAGES_PATH, {"tools": [A_TOOL], "tool_choice": {"type": "tool", "name": {"a": 1}}}),
    (COUNT_PATH, {"messages": [{"role": "user", "content": [1]}]}),
    (COUNT_PATH, {"model": ["x"]}),
    (COUNT_PATH, {"tools": [A_TOOL], "tool_choice": {"type": "tool", "name": [1]}}),
    (EMBEDDINGS_PATH, {"input": [[]]}),
    (EMBEDDINGS_PATH, {"input": [-1]}),
    (EMBEDDINGS_PATH, {"input": [10**30]}),
    (EMBEDDINGS_PATH, {"dimensions": -1}),
    (EMBEDDINGS_PATH, {"encoding_format": ["float"]}),
    (LOAD_PATH, {"keep_alive": []}),
    (LOAD_PATH, {"keep_alive": True}),
])
def test_a_value_of_the_wrong_type_or_range_is_a_400(live_with_encoder, path, change):
    response = raw_request(live_with_encoder.url, "POST", path, {**VALID[path], **change})
    api_error(response, 400, path)


@pytest.fixture(scope="module")
def capped(make_server):
    """A server that answers with at most 3 tokens whatever a request asks for."""
    return make_server(max_tokens=3)


@pytest.mark.parametrize(("path", "field"), [(CHAT_PATH, "max_tokens"),
                                             (RESPONSES_PATH, "max_output_tokens"),
                                             (MESSAGES_PATH, "max_tokens")])
def test_a_huge_token_limit_is_served_within_the_servers_cap(capped, path, field):
    body = {**(_chat() if path == CHAT_PATH else VALID[path]), field: 10**30}
    response = raw_request(capped.url, "POST", path, body)
    assert response.status == 200, response.body
    assert response.headers["x-mlxk2-max-tokens-clamped"] == f"{10**30}->3"


@pytest.mark.parametrize("keep_alive", [10**400, 1e300, "99999999999999999999h"])
def test_a_keep_alive_beyond_any_date_keeps_the_model_loaded_for_ever(capped, keep_alive):
    response = raw_request(capped.url, "POST", LOAD_PATH, {"keep_alive": keep_alive})
    assert response.status == 200, response.body
    card = response.json()
    assert (card["keep_alive_seconds"], card["expires_at"]) == (None, None)
    assert raw_request(capped.url, "GET", "/v1/ps").status == 200


@pytest.mark.parametrize(("path", "tools"), [
    (RESPONSES_PATH, [{"type": "web\nsearch\u4e2d"}, {"type": "mcp", "server_label": "a,b"}]),
    (MESSAGES_PATH, [{"type": "bash_20250124", "name": "a\r\nX-Injected: 1"}]),
])
def test_hosted_tool_names_cannot_break_the_dropped_tools_header(capped, path, tools):
    response = raw_request(capped.url, "POST", path, {**VALID[path], "tools": tools})
    assert response.status == 200, response.body
    assert "x-injected" not in response.headers
    header = response.headers["x-mlxk2-dropped-tools"]
    assert header.isascii() and header.isprintable()
    expected = {RESPONSES_PATH: "web%0Asearch%E4%B8%AD,mcp:a%2Cb",
                MESSAGES_PATH: "bash_20250124:a%0D%0AX-Injected:%201"}[path]
    assert header == expected
