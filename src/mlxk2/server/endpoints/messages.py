"""``/v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API over the chat core.

Content blocks are translated into the message list Chat Completions builds
(``tool_use`` as assistant tool calls, ``tool_result`` as tool messages,
``thinking`` as the turn's reasoning), so prompts, tools and grammars are the
chat endpoint's. :class:`MessagesWire` renders the core's events as a
``message`` or as Anthropic's named SSE events. Errors on these paths take
Anthropic's shape (see :func:`mlxk2.server.app.shaped`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlxk2.engine.events import (
    Aborted,
    Delta,
    Finished,
    Reply,
    ToolCall,
    ToolCallArguments,
    ToolCallStart,
)
from mlxk2.engine.tools import ToolChoice, ToolFunction
from mlxk2.server._requests import read_body
from mlxk2.server._runs import Run, respond
from mlxk2.server._state import state_of
from mlxk2.server.endpoints.chat import ChatInput, function_tool
from mlxk2.server.endpoints.responses import dropped_tools_header
from mlxk2.server.errors import BadRequestError, anthropic_body, to_status_and_body
from mlxk2.server.openapi import AnthropicError, answers, json_body
from mlxk2.server.schemas import CountTokensRequest, MessagesRequest

log = logging.getLogger("mlxk2.server")
router = APIRouter()

#: How text blocks of one turn (or of ``system``) are joined.
BLOCK_SEPARATOR = "\n\n"
_STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use"}


@router.post("/v1/messages", openapi_extra=json_body(MessagesRequest),
              responses=answers(None, streams=True, errors=(404, 500, 507),
                                error_model=AnthropicError))
async def create_message(request: Request) -> Response:
    req = await read_body(request, MessagesRequest)
    turn = messages_turn(req)
    response = await respond(request, req, turn.chat.prompt, MessagesWire)
    response.headers.update(dropped_tools_header(turn.dropped))
    return response


@router.post("/v1/messages/count_tokens", openapi_extra=json_body(CountTokensRequest),
              responses=answers(None, errors=(404,), error_model=AnthropicError))
async def count_tokens(request: Request) -> dict[str, Any]:
    """The exact prompt length the same request to ``/v1/messages`` would have."""
    req = await read_body(request, CountTokensRequest)
    turn = messages_turn(req)
    state = state_of(request)
    entry = await state.provider.acquire(req.model)
    try:
        async with state.tokenizing:  # as for a generating request: off the loop
            prompt = await asyncio.to_thread(turn.chat.prompt, entry)
        return {"input_tokens": len(prompt.tokens)}
    finally:
        state.provider.release(entry)


@dataclass(frozen=True)
class MessagesTurn:
    """A Messages request translated: the chat core's input, and the server tools left out."""

    chat: ChatInput
    dropped: tuple[str, ...]


def messages_turn(req: MessagesRequest | CountTokensRequest) -> MessagesTurn:
    """Translate a Messages body; every unsupported block or field is a 400 naming it."""
    if isinstance(req, MessagesRequest):
        for name in ("mcp_servers", "container"):
            if getattr(req, name) is not None:
                raise BadRequestError(f"'{name}' is not supported by this server.", param=name)
    thinking = (req.thinking or {}).get("type")
    if thinking not in (None, "enabled", "disabled", "adaptive"):
        raise BadRequestError(f"thinking type {thinking!r} is not supported.",
                              param="thinking.type")
    system = _system(req.system)
    messages = [{"role": "system", "content": system}] if system else []
    for i, message in enumerate(req.messages):
        messages += _turn(message, i)
    tools, dropped = _tools(req.tools or [])
    choice, parallel = _tool_choice(req.tool_choice, tools)
    return MessagesTurn(ChatInput(messages=tuple(messages), tools=tools, tool_choice=choice,
                                  parallel_tool_calls=parallel,
                                  thinking=None if thinking is None else thinking != "disabled"),
                        dropped)


def _system(system: str | list[dict[str, Any]] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    texts = []
    for j, block in enumerate(system):
        if block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise BadRequestError("system blocks must be text blocks.", param=f"system.{j}")
        texts.append(block["text"])
    return BLOCK_SEPARATOR.join(texts)


def _turn(message: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """One Anthropic message as chat messages: tool results first, then the text."""
    role = message.get("role")
    where = f"messages.{index}"
    if role not in ("user", "assistant"):
        raise BadRequestError(f"Message role {role!r} is not supported.", param=f"{where}.role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise BadRequestError("content must be a string or a list of blocks.",
                              param=f"{where}.content")
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        param = f"{where}.content.{j}"
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and role == "assistant":
            thinking.append(str(block.get("thinking") or ""))
        elif kind == "redacted_thinking" and role == "assistant":
            continue  # encrypted by another server: nothing a local template can read
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise BadRequestError("tool_use needs an id and a name.", param=param)
            calls.append({"id": block["id"], "type": "function", "function": {
                "name": block["name"],
                "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False)}})
        elif kind == "tool_result" and role == "user":
            results.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id")),
                            "content": _result_text(block.get("content"), param)})
        elif kind in ("image", "document"):
            raise BadRequestError(f"{kind} blocks are not supported by this server.",
                                  param=param)
        else:
            raise BadRequestError(f"Content block type {kind!r} is not supported in a "
                                  f"{role} message.", param=param)
    out = list(results)
    if role == "assistant":
        turn: dict[str, Any] = {"role": role, "content": BLOCK_SEPARATOR.join(texts)}
        if thinking:
            turn["reasoning_content"] = BLOCK_SEPARATOR.join(thinking)
        if calls:
            turn["tool_calls"] = calls
        out.append(turn)
    elif texts or not results:
        out.append({"role": role, "content": BLOCK_SEPARATOR.join(texts)})
    return out


def _result_text(content: Any, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for k, block in enumerate(content if isinstance(content, list) else [content]):
        if not isinstance(block, dict) or block.get("type") != "text":
            kind = block.get("type") if isinstance(block, dict) else None
            raise BadRequestError(f"tool_result content block {kind!r} is not supported.",
                                  param=f"{param}.content.{k}")
        texts.append(str(block.get("text") or ""))
    return BLOCK_SEPARATOR.join(texts)


def _tools(tools: Sequence[dict[str, Any]]) -> tuple[tuple[ToolFunction, ...], tuple[str, ...]]:
    """Client tools (with ``input_schema``); Anthropic's server tools are named and left out."""
    functions: list[ToolFunction] = []
    dropped: list[str] = []
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        if kind not in (None, "custom"):
            dropped.append(f"{kind}:{tool['name']}" if tool.get("name") else str(kind))
            continue
        functions.append(function_tool(tool, "input_schema", f"tools.{i}"))
    return tuple(functions), tuple(dropped)


def _tool_choice(choice: dict[str, Any] | None,
                 tools: tuple[ToolFunction, ...]) -> tuple[ToolChoice, bool]:
    if choice is None:
        return ToolChoice("auto" if tools else "none"), True
    parallel = not choice.get("disable_parallel_tool_use", False)
    kind = choice.get("type")
    if kind in ("auto", "none"):
        return ToolChoice(kind), parallel
    if kind == "any":
        if not tools:
            raise BadRequestError("tool_choice 'any' needs tools.", param="tool_choice")
        return ToolChoice("required"), parallel
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or name not in {t.name for t in tools}:
            raise BadRequestError(f"tool_choice names '{name}', which is not a client tool "
                                  "in tools.", param="tool_choice")
        return ToolChoice("function", str(name)), parallel
    raise BadRequestError("tool_choice type must be 'auto', 'any', 'tool' or 'none'.",
                          param="tool_choice.type")


def _tool_use(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments)
    except json.JSONDecodeError:
        arguments = {}
    return {"type": "tool_use", "id": call.id, "name": call.name,
            "input": arguments if isinstance(arguments, dict) else {}}


def _usage(done: Finished) -> dict[str, Any]:
    """Anthropic counts cached prompt tokens apart from ``input_tokens``."""
    return {"input_tokens": done.prompt_tokens - done.cached_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": done.cached_tokens,
            "output_tokens": done.completion_tokens}


def _stop(done: Finished) -> tuple[str, str | None]:
    if done.finish_reason == "stop" and done.stop_sequence is not None:
        return "stop_sequence", done.stop_sequence
    return _STOP_REASONS.get(done.finish_reason, "end_turn"), None


def _sse(kind: str, payload: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"


class MessagesWire:
    """Anthropic's ``message`` body and its named event stream."""

    def __init__(self, run: Run) -> None:
        self.ident = f"msg_{uuid.uuid4().hex}"
        self.model = run.entry.name

    def message(self, content: list[dict[str, Any]], usage: dict[str, Any],
                stop: tuple[str | None, str | None] = (None, None)) -> dict[str, Any]:
        return {"id": self.ident, "type": "message", "role": "assistant", "model": self.model,
                "content": content, "stop_reason": stop[0], "stop_sequence": stop[1],
                "usage": usage}

    def body(self, replies: list[Reply]) -> dict[str, Any]:
        reply = replies[0]
        content: list[dict[str, Any]] = []
        if reply.reasoning:
            content.append({"type": "thinking", "thinking": reply.reasoning, "signature": ""})
        if reply.content or not reply.tool_calls:
            content.append({"type": "text", "text": reply.content})
        content += [_tool_use(c) for c in reply.tool_calls]
        return self.message(content, _usage(reply.finished), _stop(reply.finished))

    async def stream(self, run: Run) -> AsyncIterator[str]:
        index = -1
        open_kind: str | None = None
        ended = False
        try:
            yield _sse("message_start", {"type": "message_start", "message": self.message(
                [], {"input_tokens": 0, "cache_creation_input_tokens": 0,
                     "cache_read_input_tokens": 0, "output_tokens": 0})})
            yield _sse("ping", {"type": "ping"})
            async for event in run:
                pieces: list[tuple[str, str]] = []
                if isinstance(event, Delta):
                    if event.reasoning:
                        pieces.append(("thinking", event.reasoning))
                    if event.content:
                        pieces.append(("text", event.content))
                for kind, text in pieces:
                    if open_kind != kind:
                        if open_kind is not None:
                            yield _sse("content_block_stop",
                                       {"type": "content_block_stop", "index": index})
                        index += 1
                        open_kind = kind
                        block = {"type": "thinking", "thinking": "", "signature": ""} \
                            if kind == "thinking" else {"type": "text", "text": ""}
                        yield _sse("content_block_start", {"type": "content_block_start",
                                                           "index": index,
                                                           "content_block": block})
                    delta = {"type": "thinking_delta", "thinking": text} \
                        if kind == "thinking" else {"type": "text_delta", "text": text}
                    yield _sse("content_block_delta", {"type": "content_block_delta",
                                                       "index": index, "delta": delta})
                if isinstance(event, Delta):
                    continue
                if isinstance(event, ToolCallArguments):
                    yield _sse("content_block_delta", {
                        "type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": event.arguments}})
                    continue
                if open_kind is not None:
                    yield _sse("content_block_stop", {"type": "content_block_stop",
                                                      "index": index})
                    open_kind = None
                if isinstance(event, ToolCallStart):
                    index += 1
                    open_kind = "tool_use"
                    use = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
                    yield _sse("content_block_start", {"type": "content_block_start",
                                                       "index": index, "content_block": use})
                elif isinstance(event, Finished):
                    if index < 0:
                        yield _sse("content_block_start", {
                            "type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""}})
                        yield _sse("content_block_stop", {"type": "content_block_stop",
                                                          "index": 0})
                    reason, sequence = _stop(event)
                    yield _sse("message_delta", {
                        "type": "message_delta",
                        "delta": {"stop_reason": reason, "stop_sequence": sequence},
                        "usage": _usage(event)})
                    yield _sse("message_stop", {"type": "message_stop"})
                elif isinstance(event, Aborted):
                    status, body = to_status_and_body(event.error)
                    yield _sse("error", anthropic_body(status, body))
            ended = True
        finally:
            if not ended:
                run.state.metrics.disconnects.inc()
                log.info("stream ended early; freeing its batch slot")
            run.close()
