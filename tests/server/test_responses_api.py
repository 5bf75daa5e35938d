"""The Responses API through the official ``openai`` client, on the tiny demo model."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest

from tests.fixtures.models import CHAT
from tests.fixtures.server import LiveServer, raw_request

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {
               "city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}


def create(live: LiveServer, **kwargs: Any) -> Any:
    kwargs.setdefault("model", CHAT)
    kwargs.setdefault("input", "Tell me about the weather.")
    kwargs.setdefault("temperature", 0)
    kwargs.setdefault("max_output_tokens", 24)
    return live.client().responses.create(**kwargs)


def test_create_returns_a_response_object_with_exact_usage(live, chat_tokenizer):
    response = create(live)
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete")
    (message,) = [item for item in response.output if item.type == "message"]
    assert message.role == "assistant" and message.content[0].type == "output_text"
    assert response.output_text == message.content[0].text
    prompt = chat_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tell me about the weather."}], add_generation_prompt=True)
    assert response.usage.input_tokens == len(prompt)
    assert response.usage.total_tokens == (response.usage.input_tokens
                                           + response.usage.output_tokens)


def test_length_cut_is_an_incomplete_response(live):
    response = create(live, max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3


def test_streamed_events_come_in_order_and_match_the_whole_answer(live):
    whole = create(live, store=False)
    events = list(create(live, stream=True, store=False))
    kinds = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", f"response.{whole.status}"]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text
    assert events[-1].response.output_text == text


PLACE = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                          "warm": {"type": "boolean"}},
         "required": ["city", "warm"], "additionalProperties": False}
PLACE_FORMAT = {"format": {"type": "json_schema", "name": "place", "schema": PLACE,
                           "strict": True}}


def test_typed_stream_helper_gives_the_final_response(live):
    # A schema makes the random model finish (the helper wants response.completed).
    with live.client().responses.stream(model=CHAT, input="Hello!", temperature=0,
                                        max_output_tokens=200, text=PLACE_FORMAT) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == "".join(deltas)
    jsonschema.validate(json.loads(final.output_text), PLACE)


def test_instructions_and_developer_messages_are_system_messages(live):
    as_items = create(live, input=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}])
    as_instructions = create(live, instructions="Be brief.", input="Hi")
    chat = live.client().chat.completions.create(
        model=CHAT, temperature=0, max_tokens=24,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert as_items.output_text == as_instructions.output_text == \
        chat.choices[0].message.content


def test_json_schema_text_format_is_followed(live):
    response = create(live, max_output_tokens=200, text=PLACE_FORMAT)
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), PLACE)


def _call(response: Any) -> Any:
    (call,) = [item for item in response.output if item.type == "function_call"]
    return call


def test_function_call_round_trip_without_state(live):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = create(live, input=question, tools=[WEATHER], tool_choice="required",
                   parallel_tool_calls=False, max_output_tokens=200, store=False)
    call = _call(first)
    assert call.call_id and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    second = create(live, tools=[WEATHER], store=False, input=[
        *question,
        {"type": "function_call", "call_id": call.call_id, "name": call.name,
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"celsius": 21}'}])
    assert second.status in ("completed", "incomplete")
    assert second.usage.input_tokens > first.usage.input_tokens


def test_streamed_function_call_arguments_come_in_pieces(live):
    request = {"input": "What is the weather in Paris?", "tools": [WEATHER],
               "tool_choice": "required", "parallel_tool_calls": False,
               "max_output_tokens": 200, "store": False}
    whole = _call(create(live, **request))
    events = list(create(live, **request, stream=True))
    deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    (added,) = [e.item for e in events if e.type == "response.output_item.added"
                and e.item.type == "function_call"]
    call = _call(events[-1].response)
    assert len(deltas) > 3 and {d.item_id for d in deltas} == {added.id, call.id}
    assert added.name == call.name == whole.name and added.arguments == ""
    assert "".join(d.delta for d in deltas) == done.arguments == call.arguments \
        == whole.arguments
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])


def test_previous_response_id_continues_and_reuses_the_prompt_cache(live):
    first = create(live, input="What is the weather in Paris?", tools=[WEATHER],
                   tool_choice="required", parallel_tool_calls=False, max_output_tokens=200)
    call = _call(first)
    follow = [{"type": "function_call_output", "call_id": call.call_id,
               "output": '{"celsius": 21}'}]
    chained = create(live, previous_response_id=first.id, tools=[WEATHER], input=follow)
    stateless = create(live, tools=[WEATHER], store=False, input=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name,
         "arguments": call.arguments}, *follow])
    assert chained.output_text == stateless.output_text
    assert chained.usage.input_tokens == stateless.usage.input_tokens
    assert chained.usage.input_tokens_details.cached_tokens > 0


def test_stored_responses_can_be_read_and_deleted(live):
    client = live.client()
    response = create(live)
    assert client.responses.retrieve(response.id).output_text == response.output_text
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        create(live, previous_response_id=response.id)


def test_store_false_keeps_nothing(live):
    response = create(live, store=False)
    got = raw_request(live.url, "GET", f"/v1/responses/{response.id}")
    assert got.status == 404
    assert got.json()["error"]["type"] == "invalid_request_error"


def test_the_store_is_bounded(make_server):
    small = make_server(responses_store=2)
    ids = [create(small, input=f"Hi {i}", max_output_tokens=2).id for i in range(3)]
    statuses = [raw_request(small.url, "GET", f"/v1/responses/{i}").status for i in ids]
    assert statuses == [404, 200, 200]


def test_hosted_tools_are_dropped_and_named_in_a_header(live):
    body = {"model": CHAT, "input": "Hi", "max_output_tokens": 4, "temperature": 0,
            "tools": [{"type": "web_search"}, WEATHER,
                      {"type": "mcp", "server_label": "docs", "server_url": "http://x"}]}
    response = raw_request(live.url, "POST", "/v1/responses", body=body)
    assert response.status == 200
    assert response.headers["x-mlxk2-dropped-tools"] == "web_search,mcp:docs"
    named = raw_request(live.url, "POST", "/v1/responses",
                        body={**body, "tool_choice": {"type": "web_search"}})
    assert named.status == 400 and named.json()["error"]["param"] == "tool_choice"


@pytest.mark.parametrize("field,value,param", [
    ("background", True, "background"),
    ("truncation", "auto", "truncation"),
    ("reasoning", {"effort": "high"}, "reasoning.effort"),
    ("include", ["message.output_text.logprobs"], "include"),
    ("text", {"format": {"type": "xml"}}, "text.format"),
    ("input", [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}],
     "input.0.content.0"),
    ("input", [{"type": "item_reference", "id": "x"}], "input.0.type"),
])
def test_unsupported_fields_are_400_naming_them(live, field, value, param):
    body = {"model": CHAT, "input": "Hi", "max_output_tokens": 4, field: value}
    response = raw_request(live.url, "POST", "/v1/responses", body=body)
    assert response.status == 400
    assert response.json()["error"]["param"] == param
