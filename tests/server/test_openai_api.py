"""The OpenAI endpoints through the official ``openai`` client against a live server."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from mlxk2.engine.chat import build_prompt_tokens, raw_prompt_tokens
from tests.fixtures.models import BASE, CHAT, CHAT_4BIT
from tests.fixtures.server import LiveServer, raw_request, sse_events

MESSAGES = [{"role": "user", "content": "Tell me about the weather."}]


def chat(live: LiveServer, **kwargs: Any) -> Any:
    kwargs.setdefault("model", CHAT)
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("temperature", 0)
    return live.client().chat.completions.create(**kwargs)


def test_chat_completion_reports_exact_prompt_tokens_and_length(live, chat_tokenizer):
    response = chat(live, max_tokens=12)
    choice = response.choices[0]
    assert response.id.startswith("chatcmpl-")
    assert response.object == "chat.completion"
    assert response.model == CHAT
    assert choice.finish_reason == "length"
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    expected_prompt = len(build_prompt_tokens(chat_tokenizer, MESSAGES))
    assert response.usage.prompt_tokens == expected_prompt
    assert response.usage.completion_tokens == 12
    assert response.usage.total_tokens == expected_prompt + 12


def test_max_completion_tokens_is_honoured(live):
    response = chat(live, max_completion_tokens=3)
    assert response.usage.completion_tokens == 3
    assert response.choices[0].finish_reason == "length"


def test_text_content_parts_are_joined(live):
    parts = [{"type": "text", "text": "Tell me about "}, {"type": "text", "text": "the weather."}]
    joined = chat(live, messages=[{"role": "user", "content": parts}], max_tokens=6)
    plain = chat(live, max_tokens=6)
    assert joined.choices[0].message.content == plain.choices[0].message.content


def test_stream_matches_non_stream_and_has_openai_framing(live):
    body = {"model": CHAT, "messages": MESSAGES, "max_tokens": 10, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    events = sse_events(live.url, "/v1/chat/completions", body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert len({c["created"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage_chunk, final = chunks[-1], chunks[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 10
    assert final["choices"][0]["delta"] == {}
    assert final["choices"][0]["finish_reason"] == "length"
    middle = chunks[1:-2]
    assert all(c["choices"][0]["finish_reason"] is None for c in middle)
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in middle)
    assert streamed == chat(live, max_tokens=10).choices[0].message.content


def test_openai_client_streams_with_usage(live):
    stream = chat(live, max_tokens=8, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].choices == []
    assert chunks[-2].choices[0].finish_reason == "length"


def test_stream_without_usage_has_no_usage_chunk(live):
    body = {"model": CHAT, "messages": MESSAGES, "max_tokens": 4, "stream": True}
    chunks = [json.loads(e) for e in sse_events(live.url, "/v1/chat/completions", body)[:-1]]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


def test_text_completion_uses_the_raw_prompt(live, chat_tokenizer):
    prompt = "The weather today is"
    response = live.client().completions.create(model=BASE, prompt=prompt, max_tokens=7,
                                                temperature=0)
    assert response.object == "text_completion"
    assert response.id.startswith("cmpl-")
    assert response.choices[0].finish_reason == "length"
    assert response.usage.prompt_tokens == len(raw_prompt_tokens(chat_tokenizer, prompt))
    assert response.usage.completion_tokens == 7
    streamed = live.client().completions.create(model=BASE, prompt=prompt, max_tokens=7,
                                                temperature=0, stream=True)
    text = "".join(c.choices[0].text for c in streamed if c.choices)
    assert text == response.choices[0].text


def test_text_completion_accepts_token_ids(live, chat_tokenizer):
    tokens = raw_prompt_tokens(chat_tokenizer, "The weather today is")
    by_ids = live.client().completions.create(model=BASE, prompt=tokens, max_tokens=5)
    by_text = live.client().completions.create(model=BASE, prompt="The weather today is",
                                               max_tokens=5)
    assert by_ids.choices[0].text == by_text.choices[0].text


def _completion_text(live: LiveServer, max_tokens: int, **kwargs: Any) -> Any:
    return live.client().completions.create(model=BASE, prompt="Once upon a time",
                                            max_tokens=max_tokens, temperature=0, **kwargs)


def test_stop_string_cuts_output_in_both_modes_with_exact_token_count(live, chat_tokenizer):
    reference = _completion_text(live, 30).choices[0].text
    stop = reference[8:16]
    assert len(chat_tokenizer.encode(stop, add_special_tokens=False)) > 1, "multi-token stop"
    expected = reference[: reference.index(stop)]
    plain = _completion_text(live, 30, stop=[stop, "never-appears"])
    assert plain.choices[0].text == expected
    assert plain.choices[0].finish_reason == "stop"
    streamed = _completion_text(live, 30, stop=stop, stream=True,
                                stream_options={"include_usage": True})
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    # The stop string completes exactly at the first budget whose output contains it.
    needed = next(n for n in range(1, 31)
                  if stop in _completion_text(live, n).choices[0].text)
    assert plain.usage.completion_tokens == needed


def test_stop_in_chat_never_shows_the_stop_string(live):
    reference = chat(live, max_tokens=20).choices[0].message.content
    stop = reference[4:9]
    response = chat(live, max_tokens=20, stop=stop)
    assert stop not in response.choices[0].message.content
    assert response.choices[0].message.content == reference[: reference.index(stop)]
    assert response.choices[0].finish_reason == "stop"


def test_end_of_sequence_finishes_with_stop_and_counts_the_token(live, chat_tokenizer):
    eos = chat_tokenizer.convert_tokens_to_ids("<|im_end|>")
    response = chat(live, max_tokens=10, logit_bias={str(eos): 100})
    assert response.choices[0].finish_reason == "stop"
    assert response.choices[0].message.content == ""
    assert response.usage.completion_tokens == 1


def test_sampling_extensions_and_unknown_fields_are_accepted(live):
    response = chat(live, max_tokens=5, temperature=0.8, top_p=0.9, seed=3,
                    presence_penalty=0.5, frequency_penalty=0.2,
                    extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1,
                                "some_future_field": {"x": 1}})
    assert response.usage.completion_tokens == 5


def test_same_seed_gives_same_text_when_sampling(live):
    first = chat(live, max_tokens=12, temperature=1.0, seed=7).choices[0].message.content
    second = chat(live, max_tokens=12, temperature=1.0, seed=7).choices[0].message.content
    assert first == second


def test_models_endpoint_lists_runnable_models(live):
    ids = {m.id for m in live.client().models.list().data}
    assert {CHAT, CHAT_4BIT, BASE} <= ids
    model = live.client().models.retrieve(CHAT)
    assert model.id == CHAT and model.object == "model"
    with pytest.raises(openai.NotFoundError):
        live.client().models.retrieve("nobody/nothing")


def test_health_reports_version_and_loaded_models(live):
    response = raw_request(live.url, "GET", "/health")
    body = response.json()
    assert response.status == 200
    assert body["status"] == "ok"
    assert body["version"]
    assert CHAT in body["loaded_models"]


# -- errors -------------------------------------------------------------------------------


def _assert_openai_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, response.body
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_malformed_json_is_400(live):
    response = raw_request(live.url, "POST", "/v1/chat/completions", body=b"{not json",
                           headers={"Content-Type": "application/json"})
    _assert_openai_error(response, 400)


@pytest.mark.parametrize("field,value", [
    ("temperature", "hot"), ("max_tokens", "ten"), ("stream", "yes"), ("stop", 5),
    ("messages", "hello"), ("max_tokens", 0), ("logit_bias", {"x": 1}),
])
def test_wrongly_typed_field_is_400(live, field, value):
    body = {"model": CHAT, "messages": MESSAGES, "max_tokens": 3, field: value}
    error = _assert_openai_error(
        raw_request(live.url, "POST", "/v1/chat/completions", body=body), 400)
    assert error["param"].split(".")[0] == field


def test_n_above_the_server_limit_is_400(live):
    with pytest.raises(openai.BadRequestError) as info:
        chat(live, max_tokens=3, n=live.config.max_n + 1)
    assert info.value.body["param"] == "n"


def test_unknown_model_is_404(live):
    with pytest.raises(openai.NotFoundError) as info:
        chat(live, model="nobody/missing-model", max_tokens=3)
    assert info.value.body["code"] == "model_not_found"


def test_body_too_large_is_413(make_server):
    small = make_server(max_body_bytes=2048)
    body = {"model": CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    _assert_openai_error(raw_request(small.url, "POST", "/v1/chat/completions", body=body), 413)


def test_model_too_large_for_memory_is_507(make_server):
    starved = make_server(preload=None, memory_probe=lambda: 1024)
    with pytest.raises(openai.APIStatusError) as info:
        chat(starved, max_tokens=3)
    assert info.value.status_code == 507
    assert info.value.body["code"] == "model_too_large"
    assert starved.provider.loaded_names() == []


def test_unexpected_failure_is_500_without_paths(make_server, demo_cache):
    def broken_loader(path):
        raise RuntimeError(f"exploded while reading {path}/model.safetensors")

    broken = make_server(preload=None, loader=broken_loader)
    response = raw_request(broken.url, "POST", "/v1/chat/completions",
                           body={"model": CHAT, "messages": MESSAGES, "max_tokens": 2})
    error = _assert_openai_error(response, 500)
    assert "/" not in error["message"] and "exploded" not in error["message"]
    assert "Traceback" not in response.body.decode()


def test_server_max_tokens_caps_every_request(make_server):
    capped = make_server(max_tokens=3)
    asked_more = chat(capped, max_tokens=50)
    asked_nothing = chat(capped)
    assert asked_more.usage.completion_tokens == 3
    assert asked_nothing.usage.completion_tokens == 3
    assert asked_more.choices[0].finish_reason == "length"
