"""Structured output, tool calls, logprobs and n through the official ``openai`` client.

The demo model has random weights, so whatever it writes under a grammar must
still parse and validate: only the grammar makes it so.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import jsonschema
import openai
import pytest

from tests.fixtures.json_schemas import SCHEMAS
from tests.fixtures.models import CHAT
from tests.fixtures.server import LiveServer, raw_request, sse_events

ASK = [{"role": "user", "content": "Describe it as JSON."}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {
        "zone": {"type": "string", "pattern": "^[A-Z]{3}$"}}, "required": ["zone"]}}}
FORECAST = {"type": "function", "function": {
    "name": "get_forecast", "description": "The forecast for a place",
    "parameters": {"type": "object", "properties": {
        "place": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 12},
            "country": {"type": "string", "pattern": "^[A-Z]{2}$"}},
            "required": ["city", "country"]},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "hours": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 23},
                  "minItems": 1, "maxItems": 3}},
        "required": ["place", "unit", "days", "hours"]}}}
TOOL_SCHEMAS = {t["function"]["name"]: t["function"]["parameters"]
                for t in (WEATHER, TIME, FORECAST)}


def chat(live: LiveServer, **kwargs: Any) -> Any:
    kwargs.setdefault("model", CHAT)
    kwargs.setdefault("messages", ASK)
    kwargs.setdefault("temperature", 0)
    kwargs.setdefault("max_tokens", 300)
    return live.client().chat.completions.create(**kwargs)


def json_schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema,
                                                   "strict": True}}


def assert_valid(text: str, schema: dict[str, Any]) -> Any:
    document = json.loads(text)
    jsonschema.validate(document, schema, format_checker=jsonschema.FormatChecker())
    return document


def _free_stream(live: LiveServer, prompt: str) -> str:
    stream = chat(live, messages=[{"role": "user", "content": prompt}], max_tokens=40,
                  stream=True)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_every_schema_is_followed_while_free_text_shares_the_batch(live):
    assert len(SCHEMAS) >= 20
    free_prompts = ["Tell me about the weather.", "What is a river?", "Hello!",
                    "List three colours."]
    solo = [_free_stream(live, p) for p in free_prompts]
    answers: dict[str, Any] = {}
    free: list[str | None] = [None] * len(free_prompts)
    errors: list[BaseException] = []

    def constrained(name: str) -> None:
        try:
            answers[name] = chat(live, response_format=json_schema_format(SCHEMAS[name]))
        except BaseException as exc:
            errors.append(exc)

    def unconstrained(index: int) -> None:
        try:
            free[index] = _free_stream(live, free_prompts[index])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=unconstrained, args=(i,)) for i in range(len(free))]
    threads += [threading.Thread(target=constrained, args=(n,)) for n in SCHEMAS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors
    assert free == solo
    for name, response in answers.items():
        choice = response.choices[0]
        assert choice.finish_reason == "stop", name
        assert_valid(choice.message.content, SCHEMAS[name])


def test_streamed_json_schema_validates_and_is_compact(live):
    schema = SCHEMAS["nested_object"]
    stream = chat(live, response_format=json_schema_format(schema), stream=True)
    chunks = [c for c in stream if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert_valid(text, schema)
    assert text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


def test_json_object_gives_a_json_object(live):
    response = chat(live, response_format={"type": "json_object"}, temperature=1.0, seed=0,
                    max_tokens=400)
    assert response.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(response.choices[0].message.content), dict)


def test_text_response_format_changes_nothing(live):
    plain = chat(live, max_tokens=12)
    text = chat(live, max_tokens=12, response_format={"type": "text"})
    assert text.choices[0].message.content == plain.choices[0].message.content


def test_completions_take_a_response_format(live):
    schema = SCHEMAS["array_of_enums"]
    response = live.client().completions.create(
        model=CHAT, prompt="JSON:", max_tokens=200, temperature=0,
        extra_body={"response_format": json_schema_format(schema)})
    assert_valid(response.choices[0].text, schema)


@pytest.mark.parametrize("response_format", [
    {"type": "sound"},
    {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "wibble"}}},
    {"type": "json_schema", "json_schema": {"name": "x", "schema": "not an object"}},
])
def test_unknown_or_uncompilable_response_format_is_400(live, response_format):
    with pytest.raises(openai.BadRequestError) as info:
        chat(live, response_format=response_format)
    assert info.value.body["param"] == "response_format"


def _calls(message: Any) -> list[tuple[str, Any]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]


def test_required_tool_choice_calls_a_tool_with_valid_arguments(live):
    response = chat(live, tools=[WEATHER, TIME], tool_choice="required",
                    parallel_tool_calls=False)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id
    name, arguments = _calls(choice.message)[0]
    jsonschema.validate(arguments, TOOL_SCHEMAS[name])


def test_named_tool_choice_calls_that_function(live):
    response = chat(live, tools=[WEATHER, TIME], max_tokens=800,
                    tool_choice={"type": "function", "function": {"name": "get_time"}})
    calls = _calls(response.choices[0].message)
    assert calls and all(name == "get_time" for name, _ in calls)
    for _, arguments in calls:
        jsonschema.validate(arguments, TOOL_SCHEMAS["get_time"])


def test_streamed_tool_calls_come_in_openai_pieces(live):
    stream = chat(live, tools=[WEATHER], tool_choice="required", stream=True, max_tokens=800)
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        finish = chunk.choices[0].finish_reason or finish
        for piece in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(piece.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = piece.id or entry["id"]
            entry["name"] += piece.function.name or ""
            entry["arguments"] += piece.function.arguments or ""
    assert finish == "tool_calls"
    assert calls and sorted(calls) == list(range(len(calls)))
    for entry in calls.values():
        assert entry["id"] and entry["name"] == "get_weather"
        jsonschema.validate(json.loads(entry["arguments"]), TOOL_SCHEMAS["get_weather"])


@pytest.mark.parametrize("tool_choice", [
    "required", {"type": "function", "function": {"name": "get_forecast"}}])
def test_streamed_arguments_come_in_pieces_that_accumulate_to_the_unstreamed_call(
        live, tool_choice):
    request = {"model": CHAT, "messages": ASK, "temperature": 0, "max_tokens": 800,
               "tools": [WEATHER, FORECAST], "tool_choice": tool_choice,
               "parallel_tool_calls": False}
    whole = live.client().chat.completions.create(**request).choices[0].message
    pieces: list[Any] = []
    with live.client().chat.completions.stream(**request) as stream:
        for event in stream:
            if event.type == "chunk" and event.chunk.choices:
                pieces += event.chunk.choices[0].delta.tool_calls or []
        final = stream.get_final_completion().choices[0]
    head, *rest = pieces
    assert head.index == 0 and head.id and head.type == "function"
    assert head.function.name == whole.tool_calls[0].function.name
    assert head.function.arguments == ""
    assert len(rest) > 5 and all(p.index == 0 and p.id is None and p.type is None
                                 and p.function.name is None for p in rest)
    joined = "".join(p.function.arguments for p in rest)
    assert final.finish_reason == "tool_calls"
    (call,) = final.message.tool_calls
    (unstreamed,) = whole.tool_calls
    assert call.id == head.id and joined == call.function.arguments
    assert (call.function.name, call.function.arguments) == \
        (unstreamed.function.name, unstreamed.function.arguments)
    jsonschema.validate(json.loads(joined), TOOL_SCHEMAS[call.function.name])


def test_a_tool_result_leads_to_an_answer(live):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = chat(live, messages=question, tools=[WEATHER], tool_choice="required",
                 parallel_tool_calls=False)
    call = first.choices[0].message.tool_calls[0]
    history = [*question,
               {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
               {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'}]
    second = chat(live, messages=history, tools=[WEATHER], tool_choice="none", max_tokens=20)
    assert second.choices[0].finish_reason in ("stop", "length")
    assert second.choices[0].message.tool_calls is None
    assert isinstance(second.choices[0].message.content, str)
    # The result reached the prompt: it is longer than the question with the call alone.
    shorter = chat(live, messages=history[:2], tools=[WEATHER], tool_choice="none",
                   max_tokens=1)
    assert second.usage.prompt_tokens > shorter.usage.prompt_tokens


@pytest.mark.parametrize("body,param", [
    ({"tools": [{"type": "retrieval"}]}, "tools.0.type"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
])
def test_bad_tools_are_400_naming_the_field(live, body, param):
    request = {"model": CHAT, "messages": ASK, "max_tokens": 3, **body}
    response = raw_request(live.url, "POST", "/v1/chat/completions", body=request)
    assert response.status == 400
    assert response.json()["error"]["param"] == param


def test_logprobs_equal_mlx_lm_log_softmax_in_a_greedy_run(live, tiny_chat, chat_tokenizer):
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    from mlxk2.engine.chat import build_prompt_tokens

    response = chat(live, messages=ASK, max_tokens=8, logprobs=True, top_logprobs=3)
    content = response.choices[0].logprobs.content
    assert len(content) == 8
    prompt = mx.array(build_prompt_tokens(chat_tokenizer, ASK))
    steps = generate_step(prompt, tiny_chat.model, max_tokens=8,
                          sampler=lambda lp: mx.argmax(lp, axis=-1))
    for entry, (token, logprobs) in zip(content, steps, strict=True):
        assert entry.logprob == pytest.approx(float(logprobs[int(token)]), abs=2e-2)
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        values = [alt.logprob for alt in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
    text = b"".join(bytes(e.bytes) for e in content).decode(errors="replace")
    assert text == response.choices[0].message.content


def test_streamed_logprobs_match_the_whole_answer(live):
    whole = chat(live, max_tokens=10, logprobs=True, top_logprobs=2)
    stream = chat(live, max_tokens=10, logprobs=True, top_logprobs=2, stream=True)
    pieces = [e for c in stream if c.choices and c.choices[0].logprobs
              for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in pieces] == \
        [(e.token, e.logprob) for e in whole.choices[0].logprobs.content]


def test_completions_report_legacy_logprobs(live):
    response = live.client().completions.create(model=CHAT, prompt="Once upon", max_tokens=5,
                                                temperature=0, logprobs=2)
    logprobs = response.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == 5
    assert all(len(top) <= 2 for top in logprobs.top_logprobs)
    assert "".join(logprobs.tokens) == response.choices[0].text
    assert logprobs.text_offset == sorted(logprobs.text_offset)


def test_n_choices_share_the_prompt_and_a_seed_reproduces_them(live):
    ask = {"n": 3, "temperature": 1.0, "seed": 7, "max_tokens": 12}
    first, again = chat(live, **ask), chat(live, **ask)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in again.choices]
    assert len(set(texts)) > 1
    one = chat(live, **{**ask, "n": 1})
    assert first.usage.prompt_tokens == one.usage.prompt_tokens
    assert 3 <= first.usage.completion_tokens <= 3 * 12
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens


def test_streamed_n_choices_each_finish(live):
    stream = chat(live, n=2, temperature=1.0, seed=3, max_tokens=6, stream=True,
                  stream_options={"include_usage": True})
    finishes, usage = {}, None
    for chunk in stream:
        for choice in chunk.choices:
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
        usage = chunk.usage or usage
    assert sorted(finishes) == [0, 1]
    assert usage is not None and usage.completion_tokens <= 12


@pytest.mark.parametrize("path,body,param", [
    ("/v1/completions", {"prompt": "hi", "suffix": "end"}, "suffix"),
    ("/v1/completions", {"prompt": "hi", "best_of": 2}, "best_of"),
    ("/v1/completions", {"prompt": "hi", "echo": True}, "echo"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, "messages.0.content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]},
     "messages.0.content"),
    ("/v1/chat/completions", {"messages": ASK, "audio": {"voice": "alloy"}}, "audio"),
    ("/v1/chat/completions", {"messages": ASK, "response_format": {"type": "sound"}},
     "response_format"),
    ("/v1/chat/completions", {"messages": ASK, "tools": [{"type": "code_interpreter"}]},
     "tools.0.type"),
    ("/v1/chat/completions", {"messages": ASK, "top_logprobs": 2}, "top_logprobs"),
    ("/v1/chat/completions", {"messages": ASK, "logprobs": True, "top_logprobs": 21},
     "top_logprobs"),
])
def test_fields_that_would_change_the_output_are_400_naming_them(live, path, body, param):
    response = raw_request(live.url, "POST", path, body={"model": CHAT, "max_tokens": 3, **body})
    assert response.status == 400, response.body
    assert response.json()["error"]["param"] == param


def test_every_response_and_chunk_has_the_system_fingerprint(live):
    response = chat(live, max_tokens=3)
    assert response.system_fingerprint.startswith("mlxk2-")
    text = live.client().completions.create(model=CHAT, prompt="x", max_tokens=2)
    assert text.system_fingerprint == response.system_fingerprint
    events = sse_events(live.url, "/v1/chat/completions",
                        {"model": CHAT, "messages": ASK, "max_tokens": 3, "stream": True})
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["system_fingerprint"] for c in chunks} == {response.system_fingerprint}


def test_a_max_tokens_cut_to_the_context_is_marked_in_a_header(live, chat_tokenizer):
    from mlxk2.engine.chat import build_prompt_tokens

    context = 2048  # the demo model's
    long = [{"role": "user", "content": "the river " * 503}]
    room = context - len(build_prompt_tokens(chat_tokenizer, long))
    assert 0 < room < 40
    body = {"model": CHAT, "messages": long, "temperature": 0}
    for stream in (False, True):
        response = raw_request(live.url, "POST", "/v1/chat/completions",
                               body={**body, "stream": stream, "max_tokens": 5000})
        assert response.headers["x-mlxk2-max-tokens-clamped"] == f"5000->{room}"
    fits = raw_request(live.url, "POST", "/v1/chat/completions",
                       body={**body, "max_tokens": room})
    assert "x-mlxk2-max-tokens-clamped" not in fits.headers
