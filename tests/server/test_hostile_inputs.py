"""Inputs a client can send that once made the server answer 500: each is now a 4xx."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.models import CHAT
from tests.fixtures.server import raw_request

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
