"""The Anthropic Messages API through the official ``anthropic`` client, on the tiny demo model."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import jsonschema
import pytest

from tests.fixtures.models import CHAT
from tests.fixtures.server import LiveServer, raw_request

WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {
               "city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


def client(live: LiveServer, **kwargs: Any) -> anthropic.Anthropic:
    kwargs.setdefault("api_key", live.config.api_key or "unused")
    return anthropic.Anthropic(base_url=live.url, max_retries=0, timeout=60, **kwargs)


def create(live: LiveServer, **kwargs: Any) -> Any:
    kwargs.setdefault("model", CHAT)
    kwargs.setdefault("messages", [{"role": "user", "content": "Tell me about the weather."}])
    kwargs.setdefault("max_tokens", 24)
    return client(live).messages.create(**kwargs)


def test_create_returns_a_message_with_exact_usage(live, chat_tokenizer):
    message = create(live, system="Be brief.")
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.content[0].type == "text"
    assert message.stop_reason in ("end_turn", "max_tokens")
    prompt = chat_tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "Tell me about the weather."}], add_generation_prompt=True)
    usage = message.usage
    assert usage.input_tokens + usage.cache_read_input_tokens == len(prompt)


def test_max_tokens_cut_is_reported(live):
    message = create(live, max_tokens=3)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3


def test_stop_sequence_is_named(live):
    free = create(live, max_tokens=30).content[0].text
    word = free.split()[1] if len(free.split()) > 1 else free[2:5]
    message = create(live, max_tokens=30, stop_sequences=[word])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == word
    assert word not in message.content[0].text


def test_stream_matches_create_and_parses_with_the_typed_helper(live):
    whole = create(live)
    with client(live).messages.stream(model=CHAT, max_tokens=24, messages=[
            {"role": "user", "content": "Tell me about the weather."}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.content[0].text == whole.content[0].text
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"


def test_raw_stream_has_anthropic_named_events(live):
    stream = create(live, stream=True, max_tokens=5)
    kinds = [event.type for event in stream]
    assert kinds[0] == "message_start"
    assert kinds[1:3] == ["content_block_start", "content_block_delta"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_tool_use_and_tool_result_round_trip(live):
    first = create(live, messages=QUESTION, tools=[WEATHER], max_tokens=200,
                   tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather"
    jsonschema.validate(use.input, WEATHER["input_schema"])
    history = [*QUESTION, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                             "content": '{"celsius": 21}'}]}]
    second = create(live, messages=history, tools=[WEATHER])
    assert second.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert second.usage.input_tokens + second.usage.cache_read_input_tokens > \
        first.usage.input_tokens + first.usage.cache_read_input_tokens


def test_streamed_tool_use_parses_with_the_typed_helper(live):
    choice = {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    with client(live).messages.stream(model=CHAT, max_tokens=400, messages=QUESTION,
                                      tools=[WEATHER], tool_choice=choice) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and uses
    for use in uses:
        jsonschema.validate(use.input, WEATHER["input_schema"])


def test_streamed_tool_input_comes_in_json_pieces_equal_to_the_unstreamed_input(live):
    request = {"model": CHAT, "max_tokens": 400, "messages": QUESTION, "tools": [WEATHER],
               "tool_choice": {"type": "tool", "name": "get_weather",
                               "disable_parallel_tool_use": True}}
    (whole,) = [b for b in client(live).messages.create(**request).content
                if b.type == "tool_use"]
    with client(live).messages.stream(**request) as stream:
        events = list(stream)
        final = stream.get_final_message()
    pieces = [e.delta.partial_json for e in events if e.type == "content_block_delta"
              and e.delta.type == "input_json_delta"]
    (use,) = [b for b in final.content if b.type == "tool_use"]
    assert len(pieces) > 3 and json.loads("".join(pieces)) == use.input == whole.input
    jsonschema.validate(use.input, WEATHER["input_schema"])


def test_count_tokens_is_exact(live):
    body: dict[str, Any] = {"model": CHAT, "system": [{"type": "text", "text": "Be brief."}],
                            "messages": QUESTION, "tools": [WEATHER]}
    counted = client(live).messages.count_tokens(**body)
    message = create(live, **body, max_tokens=1)
    assert counted.input_tokens == \
        message.usage.input_tokens + message.usage.cache_read_input_tokens


def _anthropic_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    return body["error"]


@pytest.mark.parametrize("body", [
    {"model": CHAT, "messages": QUESTION},  # max_tokens is required
    {"model": CHAT, "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "AAAA"}}]}]},
    {"model": CHAT, "max_tokens": 4, "messages": QUESTION,
     "tool_choice": {"type": "tool", "name": "missing"}},
])
def test_invalid_requests_get_anthropic_errors(live, body):
    error = _anthropic_error(raw_request(live.url, "POST", "/v1/messages", body=body), 400)
    assert error["type"] == "invalid_request_error"


def test_unknown_model_is_an_anthropic_not_found_error(live):
    body = {"model": "nope/nothing", "max_tokens": 4, "messages": QUESTION}
    error = _anthropic_error(raw_request(live.url, "POST", "/v1/messages", body=body), 404)
    assert error["type"] == "not_found_error"


def test_server_tools_are_dropped_and_named(live):
    body = {"model": CHAT, "max_tokens": 4, "messages": QUESTION,
            "tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search"}]}
    response = raw_request(live.url, "POST", "/v1/messages", body=body)
    assert response.status == 200
    assert response.headers["x-mlxk2-dropped-tools"] == "web_search_20250305:web_search"


def test_x_api_key_is_accepted_and_a_wrong_key_is_an_anthropic_error(make_server):
    guarded = make_server(api_key="s3cret-key")
    message = create(guarded, max_tokens=2)
    assert message.usage.output_tokens == 2
    with pytest.raises(anthropic.AuthenticationError):
        client(guarded, api_key="wrong").messages.create(model=CHAT, max_tokens=2,
                                                         messages=QUESTION)
    body = {"model": CHAT, "max_tokens": 2, "messages": QUESTION}
    error = _anthropic_error(raw_request(guarded.url, "POST", "/v1/messages", body=body), 401)
    assert error["type"] == "authentication_error"
    bearer = raw_request(guarded.url, "POST", "/v1/messages", body=body,
                         headers={"Authorization": "Bearer s3cret-key"})
    assert bearer.status == 200


def test_same_greedy_prompt_gives_the_same_text_through_all_three_apis(live):
    system, user = "You answer briefly.", "Name a colour."
    chat = live.client().chat.completions.create(
        model=CHAT, temperature=0, max_tokens=30,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}])
    response = live.client().responses.create(model=CHAT, temperature=0, max_output_tokens=30,
                                              instructions=system, input=user, store=False)
    message = create(live, system=system, max_tokens=30,
                     messages=[{"role": "user", "content": user}])
    text = chat.choices[0].message.content
    assert text
    assert response.output_text == text
    assert message.content[0].text == text
    assert chat.usage.completion_tokens == response.usage.output_tokens == \
        message.usage.output_tokens


def test_metrics_count_requests_by_endpoint(live):
    create(live, max_tokens=1)
    live.client().responses.create(model=CHAT, input="Hi", max_output_tokens=1, store=False)
    metrics = raw_request(live.url, "GET", "/metrics").body.decode()
    assert 'endpoint="/v1/messages"' in metrics
    assert 'endpoint="/v1/responses"' in metrics
    assert json.dumps(metrics)  # rendered text, not an error body
