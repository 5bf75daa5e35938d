"""The Responses and Messages wires on scripted event streams, checked against the SDKs' types.

Generation is not under test here: the events are written by hand, so that
reasoning, several tool calls and a mid-stream abort (which the demo model
cannot be made to produce on demand) are rendered too. Every streamed event
and body must validate as the official ``openai`` / ``anthropic`` type.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from mlxk2.engine.events import (
    Aborted,
    Delta,
    Event,
    Finished,
    ToolCall,
    ToolCallArguments,
    ToolCallStart,
)
from mlxk2.server._store import ResponseStore
from mlxk2.server.endpoints.messages import MessagesWire, messages_turn
from mlxk2.server.endpoints.responses import ResponsesWire, input_messages, responses_turn
from mlxk2.server.errors import ServiceUnavailableError
from mlxk2.server.metrics import Metrics
from mlxk2.server.schemas import MessagesRequest, ResponsesRequest

CALL = ToolCall(0, "call_1", "get_weather", '{"city": "Paris"}')
DONE = Finished("tool_calls", prompt_tokens=10, completion_tokens=7, cached_tokens=4)
SCRIPT: list[Event] = [Delta(reasoning="Let me "), Delta(reasoning="think."),
                       Delta(content="Checking."),
                       ToolCallStart(0, "call_1", "get_weather"),
                       ToolCallArguments(0, '{"city": '), ToolCallArguments(0, '"Paris"}'),
                       CALL, DONE]


class ScriptedRun:
    """What a wire reads from a run: its events, the model name, metrics and close()."""

    def __init__(self, events: list[Event]) -> None:
        self._events = events
        self.entry = SimpleNamespace(name="mlxk2/demo-chat")
        self.state = SimpleNamespace(metrics=Metrics())
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[Event]:
        for event in self._events:
            yield event

    def close(self) -> None:
        self.closed = True


def _by_type(union: Any) -> dict[str, Any]:
    """The SDK's event classes by their ``type`` literal (the unions are not discriminated)."""
    from typing import get_args

    while get_args(union) and not isinstance(get_args(union)[0], type):
        union = get_args(union)[0]
    classes = {}
    for cls in get_args(union):
        (literal,) = get_args(cls.model_fields["type"].annotation)
        classes[literal] = cls
    return classes


def _read(stream: AsyncIterator[str]) -> list[tuple[str, dict[str, Any]]]:
    async def collect() -> list[str]:
        return [text async for text in stream]

    out = []
    for text in asyncio.run(collect()):
        head, data = text.rstrip("\n").split("\n")
        out.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def _responses_wire(run: ScriptedRun, **body: Any) -> ResponsesWire:
    req = ResponsesRequest.model_validate({"input": "Hi", **body})
    return ResponsesWire(run, req, responses_turn(req, ResponseStore(4)),  # type: ignore[arg-type]
                         ResponseStore(4))


def test_responses_stream_renders_reasoning_text_and_calls_as_typed_events():
    from openai.types.responses import Response, ResponseStreamEvent

    run = ScriptedRun(SCRIPT)
    events = _read(_responses_wire(run).stream(run))  # type: ignore[arg-type]
    classes = _by_type(ResponseStreamEvent)
    for name, payload in events:
        assert classes[name].model_validate(payload).type == name
    kinds = [name for name, _ in events]
    assert kinds == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.reasoning_text.delta", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    final = Response.model_validate(events[-1][1]["response"])
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert final.output[0].content[0].text == "Let me think."  # type: ignore[union-attr, index]
    assert final.usage is not None and final.usage.input_tokens_details.cached_tokens == 4
    assert run.closed


BROKEN_OFF: list[Event] = [ToolCallStart(0, "call_1", "get_weather"),
                           ToolCallArguments(0, '{"city": '),
                           Delta(content='<tool_call>{"name": "get_weather", "arguments": {"ci'),
                           Finished("length", prompt_tokens=10, completion_tokens=7)]


def test_a_call_that_breaks_off_is_closed_incomplete_and_its_text_is_the_message():
    from openai.types.responses import Response, ResponseStreamEvent

    run = ScriptedRun(BROKEN_OFF)
    events = _read(_responses_wire(run).stream(run))  # type: ignore[arg-type]
    classes = _by_type(ResponseStreamEvent)
    for name, payload in events:
        assert classes[name].model_validate(payload).type == name
    items = [p["item"] for n, p in events if n == "response.output_item.done"]
    assert [(i["type"], i["status"]) for i in items] == [("function_call", "incomplete"),
                                                         ("message", "completed")]
    final = Response.model_validate(events[-1][1]["response"])
    assert [item.type for item in final.output] == ["message"]
    assert final.output_text.startswith("<tool_call>")


def test_responses_body_equals_the_streamed_final_response():
    from openai.types.responses import Response

    run = ScriptedRun(SCRIPT)
    wire = _responses_wire(run)
    from mlxk2.engine.events import ReplyBuilder

    builder = ReplyBuilder()
    replies = None
    for event in SCRIPT:
        replies = builder.add(event) or replies
    assert replies is not None
    body = Response.model_validate(wire.body(replies))
    assert [item.type for item in body.output] == ["reasoning", "message", "function_call"]
    assert body.output_text == "Checking."


def test_an_abort_mid_stream_is_a_failed_response():
    from openai.types.responses import Response

    run = ScriptedRun([Delta(content="Hel"),
                       Aborted(ServiceUnavailableError("The server is shutting down.",
                                                       code="shutting_down"))])
    events = _read(_responses_wire(run).stream(run))  # type: ignore[arg-type]
    name, payload = events[-1]
    assert name == "response.failed"
    failed = Response.model_validate(payload["response"])
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "server_error"
    assert "shutting_down" in failed.error.message


def _messages_events(script: list[Event]) -> list[tuple[str, dict[str, Any]]]:
    run = ScriptedRun(script)
    events = _read(MessagesWire(run).stream(run))  # type: ignore[arg-type]
    assert run.closed
    return events


def test_messages_stream_renders_thinking_text_and_tool_use_as_anthropic_events():
    from anthropic.types import RawMessageStreamEvent

    events = _messages_events(SCRIPT)
    classes = _by_type(RawMessageStreamEvent)
    for name, payload in events:
        if name != "ping":
            assert classes[name].model_validate(payload).type == name
    blocks = [p["content_block"]["type"] for n, p in events if n == "content_block_start"]
    assert blocks == ["thinking", "text", "tool_use"]
    deltas = [p["delta"]["type"] for n, p in events if n == "content_block_delta"]
    assert deltas == ["thinking_delta", "thinking_delta", "text_delta", "input_json_delta",
                      "input_json_delta"]
    (stop,) = [p for n, p in events if n == "message_delta"]
    assert stop["delta"]["stop_reason"] == "tool_use"
    assert stop["usage"]["cache_read_input_tokens"] == 4
    assert [n for n, _ in events][-1] == "message_stop"


def test_messages_stream_closes_a_tool_use_that_breaks_off_before_its_text():
    from anthropic.types import RawMessageStreamEvent

    events = _messages_events(BROKEN_OFF)
    classes = _by_type(RawMessageStreamEvent)
    for name, payload in events:
        if name != "ping":
            assert classes[name].model_validate(payload).type == name
    kinds = [n for n, _ in events if n.startswith("content_block")]
    assert kinds == ["content_block_start", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_stop"]


def test_messages_abort_mid_stream_is_an_error_event():
    events = _messages_events([Delta(content="Hel"), Aborted(RuntimeError("boom"))])
    name, payload = events[-1]
    assert name == "error"
    assert payload == {"type": "error", "error": {
        "type": "api_error", "message": "The server failed to process the request."}}


def test_messages_body_validates_as_an_anthropic_message():
    from anthropic.types import Message

    from mlxk2.engine.events import Reply

    reply = Reply("Checking.", "Let me think.", DONE, (CALL,))
    message = Message.model_validate(MessagesWire(ScriptedRun([])).body([reply]))  # type: ignore[arg-type]
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[2].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens == 6 and message.usage.cache_read_input_tokens == 4


def test_responses_items_become_chat_messages():
    messages = input_messages([
        {"role": "developer", "content": "Rules."},
        {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [],
         "content": [{"type": "reasoning_text", "text": "Call it."}]},
        {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    ])
    assert messages[0] == {"role": "system", "content": "Rules."}
    assert messages[1] == {"role": "user", "content": "Weather?"}
    assistant = messages[2]
    assert assistant["reasoning_content"] == "Call it."
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2"]
    assert messages[3] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}


def test_anthropic_blocks_become_chat_messages():
    req = MessagesRequest.model_validate({"model": "m", "max_tokens": 1, "system": "Rules.",
                                          "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Call it.", "signature": ""},
            {"type": "tool_use", "id": "t1", "name": "w", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text",
                                                                      "text": "sunny"}]},
            {"type": "text", "text": "And tomorrow?"}]}]})
    messages = list(messages_turn(req).chat.messages)
    assert messages[0] == {"role": "system", "content": "Rules."}
    assert messages[2]["reasoning_content"] == "Call it."
    assert json.loads(messages[2]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert messages[3] == {"role": "tool", "tool_call_id": "t1", "content": "sunny"}
    assert messages[4] == {"role": "user", "content": "And tomorrow?"}


@pytest.mark.parametrize("field", ["mcp_servers", "container"])
def test_unimplemented_anthropic_fields_are_refused(field):
    from mlxk2.server.errors import BadRequestError

    req = MessagesRequest.model_validate({"model": "m", "max_tokens": 1, field: [],
                                          "messages": [{"role": "user", "content": "Hi"}]})
    with pytest.raises(BadRequestError) as info:
        messages_turn(req)
    assert info.value.param == field


#: A Qwen3-style template: ``enable_thinking=False`` writes an empty think block.
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% endif %}"
)


@pytest.mark.parametrize("thinking,empty_block", [
    ({"type": "disabled"}, True), ({"type": "enabled", "budget_tokens": 1024}, False),
    (None, None)])
def test_anthropic_thinking_reaches_templates_that_read_enable_thinking(
        demo_cache, thinking, empty_block):
    """No ``thinking`` leaves mlx-lm's default for the model (the demo has no think tokens)."""
    from mlx_lm.utils import load_tokenizer

    from mlxk2.server.endpoints.chat import _template
    from tests.fixtures.models import CHAT

    tokenizer = load_tokenizer(demo_cache.paths[CHAT])
    tokenizer._tokenizer.chat_template = THINKING_TEMPLATE
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}
    if thinking is not None:
        body["thinking"] = thinking
    chat = messages_turn(MessagesRequest.model_validate(body)).chat
    entry = SimpleNamespace(loaded=SimpleNamespace(tokenizer=tokenizer, context_length=None,
                                                  max_token_chars=0))
    tokens = _template(entry, chat)  # type: ignore[arg-type]
    if empty_block is None:
        assert tokens == list(tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hi"}], add_generation_prompt=True))
    else:
        assert ("<think>" in tokenizer.decode(tokens)) == empty_block
