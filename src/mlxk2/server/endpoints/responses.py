"""``/v1/responses``: OpenAI's Responses API as a thin adapter over the chat core.

A request's ``input`` items (and, with ``previous_response_id``, the stored
conversation before them) are translated into the same message list Chat
Completions builds, so the prompt, tools, grammar and prompt cache are the
chat endpoint's. :class:`ResponsesWire` renders the core's events as a
``response`` object or as the typed event stream, and stores the answer.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlxk2.engine.events import (
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
from mlxk2.server._store import ResponseStore, StoredResponse
from mlxk2.server.endpoints._openai import response_constraint
from mlxk2.server.endpoints.chat import ChatInput, function_tool
from mlxk2.server.errors import BadRequestError, NotFoundError, to_status_and_body
from mlxk2.server.openapi import answers, json_body
from mlxk2.server.schemas import ResponsesRequest

log = logging.getLogger("mlxk2.server")
router = APIRouter()

#: Lists the hosted tools (``web_search``, ``mcp``…) a request offered and the
#: server left out of the prompt, as ``type`` or ``type:name``, comma-separated.
DROPPED_TOOLS_HEADER = "X-Mlxk2-Dropped-Tools"


def dropped_tools_header(dropped: Sequence[str]) -> dict[str, str]:
    """The :data:`DROPPED_TOOLS_HEADER` for the hosted tools left out, if any.

    Labels are the client's own text: percent-encoded, so that no character
    (a newline, a comma, anything outside Latin-1) can break the header.
    """
    if not dropped:
        return {}
    return {DROPPED_TOOLS_HEADER: ",".join(quote(label, safe=":") for label in dropped)}


#: ``include`` values that ask for something this server cannot give.
_UNSUPPORTED_INCLUDES = frozenset({"message.output_text.logprobs"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


@router.post("/v1/responses", openapi_extra=json_body(ResponsesRequest),
              responses=answers(None, streams=True, errors=(404, 500, 507)))
async def create_response(request: Request) -> Response:
    req = await read_body(request, ResponsesRequest)
    store = state_of(request).responses
    turn = responses_turn(req, store)
    response = await respond(request, req, turn.chat.prompt,
                             lambda run: ResponsesWire(run, req, turn, store))
    response.headers.update(dropped_tools_header(turn.dropped))
    return response


@router.get("/v1/responses/{response_id}", responses=answers(None, errors=(404,)))
async def get_response(response_id: str, request: Request) -> dict[str, Any]:
    stored = state_of(request).responses.get(response_id)
    if stored is None:
        raise _not_found(response_id)
    return stored.body


@router.delete("/v1/responses/{response_id}", responses=answers(None, errors=(404,)))
async def delete_response(response_id: str, request: Request) -> dict[str, Any]:
    if not state_of(request).responses.delete(response_id):
        raise _not_found(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


def _not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"No stored response with id '{response_id}'.", param="response_id")


@dataclass(frozen=True)
class ResponsesTurn:
    """A Responses request translated: the chat core's input and what to store after it.

    ``history`` is the conversation without ``instructions`` (the API does not
    carry them over to a follow-up); ``dropped`` names the hosted tools left out.
    """

    chat: ChatInput
    history: tuple[dict[str, Any], ...]
    dropped: tuple[str, ...]


def responses_turn(req: ResponsesRequest, store: ResponseStore) -> ResponsesTurn:
    """Translate a Responses body; every unsupported field is a 400 naming it.

    Raises:
        BadRequestError: an unsupported field, item, content part or tool choice.
        NotFoundError: ``previous_response_id`` is not in the store.
    """
    _refuse_unsupported(req)
    history: list[dict[str, Any]] = []
    if req.previous_response_id is not None:
        stored = store.get(req.previous_response_id)
        if stored is None:
            raise NotFoundError(f"No stored response with id '{req.previous_response_id}'.",
                                param="previous_response_id")
        history = list(stored.history)
    history += input_messages(req.input)
    if not history:
        raise BadRequestError("The request has no input.", param="input")
    tools, dropped = _tools(req.tools or [])
    system = [{"role": "system", "content": req.instructions}] if req.instructions else []
    chat = ChatInput(
        messages=tuple(system + history),
        tools=tools,
        tool_choice=_tool_choice(req.tool_choice, tools),
        parallel_tool_calls=req.parallel_tool_calls is not False,
        response_format=_text_format(req.text),
    )
    return ResponsesTurn(chat, tuple(history), dropped)


def _refuse_unsupported(req: ResponsesRequest) -> None:
    refused = {
        "background": bool(req.background),
        "truncation": req.truncation not in (None, "disabled"),
        "conversation": req.conversation is not None,
        "prompt": req.prompt is not None,
        "max_tool_calls": req.max_tool_calls is not None,
        "top_logprobs": bool(req.top_logprobs),
        "response_format": req.response_format is not None,
        "n": req.choices() != 1,
        "reasoning.effort": (req.reasoning or {}).get("effort") is not None,
    }
    for name, refuse in refused.items():
        if refuse:
            raise BadRequestError(f"'{name}' is not supported by this server.", param=name)
    for value in req.include or []:
        if value in _UNSUPPORTED_INCLUDES:
            raise BadRequestError(f"include '{value}' is not supported.", param="include")


def input_messages(items: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Responses ``input`` as chat messages (the chat endpoint's shape).

    ``developer`` is a system message; ``function_call`` items join the
    assistant turn before them; a ``reasoning`` item's text rides on the next
    assistant turn as ``reasoning_content``, for templates that read it.
    """
    if items is None:
        return []
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    out: list[dict[str, Any]] = []
    reasoning = ""
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("system", "developer", "user", "assistant"):
                raise BadRequestError(f"Message role {role!r} is not supported.",
                                      param=f"input.{i}.role")
            message: dict[str, Any] = {"role": "system" if role == "developer" else role,
                                       "content": _text(item.get("content"), f"input.{i}")}
            if role == "assistant" and reasoning:
                message["reasoning_content"], reasoning = reasoning, ""
            out.append(message)
        elif kind == "function_call":
            call = {"id": _string(item, "call_id", i), "type": "function",
                    "function": {"name": _string(item, "name", i),
                                 "arguments": _string(item, "arguments", i)}}
            last = out[-1] if out else None
            if last is None or last["role"] != "assistant":
                last = {"role": "assistant", "content": ""}
                out.append(last)
            if reasoning:
                last["reasoning_content"], reasoning = reasoning, ""
            last["tool_calls"] = [*last.get("tool_calls", []), call]
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": _string(item, "call_id", i),
                        "content": _text(item.get("output"), f"input.{i}.output")})
        elif kind == "reasoning":
            parts = [*_parts(item, "content", i), *_parts(item, "summary", i)]
            reasoning += "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
        else:
            raise BadRequestError(f"Input item type {kind!r} is not supported.",
                                  param=f"input.{i}.type")
    return out


def _parts(item: dict[str, Any], key: str, index: int) -> list[Any]:
    value = item.get(key) or []
    if not isinstance(value, list):
        raise BadRequestError(f"'{key}' must be a list of parts.", param=f"input.{index}.{key}")
    return value


def _string(item: dict[str, Any], key: str, index: int) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise BadRequestError(f"'{key}' must be a string.", param=f"input.{index}.{key}")
    return value


def _text(content: Any, param: str) -> str:
    """A content string or list of text parts as one string; other parts are a 400."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise BadRequestError("Content must be a string or a list of parts.", param=param)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise BadRequestError(f"Content part type {kind!r} is not supported.",
                                  param=f"{param}.content.{j}")
        texts.append(part["text"])
    return "".join(texts)


def _tools(tools: Sequence[dict[str, Any]]) -> tuple[tuple[ToolFunction, ...], tuple[str, ...]]:
    """Function tools in the flat Responses shape; hosted tools are named and left out."""
    functions: list[ToolFunction] = []
    dropped: list[str] = []
    for i, tool in enumerate(tools):
        kind = str(tool.get("type"))
        if kind != "function":
            label = tool.get("name") or tool.get("server_label")
            dropped.append(f"{kind}:{label}" if label else kind)
            continue
        functions.append(function_tool(tool, "parameters", f"tools.{i}"))
    return tuple(functions), tuple(dropped)


def _tool_choice(choice: str | dict[str, Any] | None,
                 tools: tuple[ToolFunction, ...]) -> ToolChoice:
    if choice is None:
        return ToolChoice("auto" if tools else "none")
    if choice in ("none", "auto", "required"):
        if choice == "required" and not tools:
            raise BadRequestError("tool_choice 'required' needs function tools.",
                                  param="tool_choice")
        return ToolChoice(choice)  # type: ignore[arg-type]
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if not isinstance(name, str) or name not in {t.name for t in tools}:
            raise BadRequestError(f"tool_choice names '{name}', which is not in tools.",
                                  param="tool_choice")
        return ToolChoice("function", str(name))
    if isinstance(choice, dict) and isinstance(choice.get("type"), str):
        raise BadRequestError(f"tool_choice names the tool type '{choice['type']}', which "
                              "cannot run on this server; only function tools can.",
                              param="tool_choice")
    raise BadRequestError("tool_choice must be 'none', 'auto', 'required' or "
                          "{'type': 'function', 'name': ...}.", param="tool_choice")


def _text_format(text: dict[str, Any] | None) -> Any:
    """``text.format`` as the grammar the reply must match (None for plain text)."""
    text = text or {}
    if text.get("verbosity") not in (None, "medium"):
        raise BadRequestError("text.verbosity is not supported.", param="text.verbosity")
    spec = text.get("format")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise BadRequestError("text.format must be an object.", param="text.format")
    as_chat = spec
    if spec.get("type") == "json_schema":
        as_chat = {"type": "json_schema", "json_schema": {"schema": spec.get("schema")}}
    try:
        return response_constraint(as_chat)
    except BadRequestError as exc:
        raise BadRequestError(exc.message.replace("response_format", "text.format"),
                              param="text.format") from exc


def _usage(done: Finished) -> dict[str, Any]:
    """OpenAI's Responses usage; the core does not count reasoning tokens apart (0)."""
    return {
        "input_tokens": done.prompt_tokens,
        "input_tokens_details": {"cached_tokens": done.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": done.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _message_item(ident: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [_text_part(text)] if status == "completed" else []
    return {"type": "message", "id": ident, "status": status, "role": "assistant",
            "content": content}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _reasoning_item(ident: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if status == "completed" else []
    return {"type": "reasoning", "id": ident, "summary": [], "content": content,
            "encrypted_content": None, "status": status}


def _call_item(call: ToolCall | ToolCallStart, ident: str, arguments: str = "",
               status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": ident, "call_id": call.id, "name": call.name,
            "arguments": arguments, "status": status}


def _assistant_turn(reply: Reply) -> dict[str, Any]:
    """The answer as the chat message a follow-up request's history holds."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments}}
                                 for c in reply.tool_calls]
    return message


class ResponsesWire:
    """The ``response`` object, the typed SSE events, and the store."""

    def __init__(self, run: Run, req: ResponsesRequest, turn: ResponsesTurn,
                 store: ResponseStore) -> None:
        self.ident = _item_id("resp")
        self.created = int(time.time())
        self.model = run.entry.name
        self.req = req
        self.turn = turn
        self.store = store

    def response(self, status: str, output: list[dict[str, Any]],
                 done: Finished | None = None, error: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
        """The ``response`` object in any state (``in_progress`` while streaming)."""
        req = self.req
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        text_format = (req.text or {}).get("format") or {"type": "text"}
        return {
            "id": self.ident, "object": "response", "created_at": self.created,
            "status": status, "error": error, "incomplete_details": incomplete,
            "instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
            "model": self.model, "output": output,
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "previous_response_id": req.previous_response_id,
            "reasoning": {"effort": None, "summary": (req.reasoning or {}).get("summary")},
            "store": req.store is not False,
            "temperature": req.temperature, "top_p": req.top_p,
            "text": {"format": text_format},
            "tool_choice": req.tool_choice or ("auto" if self.turn.chat.tools else "none"),
            "tools": [t for t in req.tools or [] if t.get("type") == "function"],
            "truncation": "disabled", "user": req.user, "metadata": req.metadata or {},
            "usage": _usage(done) if done is not None else None,
        }

    def body(self, replies: list[Reply]) -> dict[str, Any]:
        reply = replies[0]
        output: list[dict[str, Any]] = []
        if reply.reasoning:
            output.append(_reasoning_item(_item_id("rs"), reply.reasoning))
        if reply.content or not reply.tool_calls:
            output.append(_message_item(_item_id("msg"), reply.content))
        output += [_call_item(c, _item_id("fc"), c.arguments) for c in reply.tool_calls]
        return self._finish(reply, output)

    def _finish(self, reply: Reply, output: list[dict[str, Any]]) -> dict[str, Any]:
        status = "incomplete" if reply.finished.finish_reason == "length" else "completed"
        body = self.response(status, output, reply.finished)
        if self.req.store is not False:
            self.store.put(self.ident, StoredResponse(
                body, (*self.turn.history, _assistant_turn(reply))))
        return body

    def stream(self, run: Run) -> AsyncIterator[str]:
        return _ResponseEvents(self, run).events()


class _ResponseEvents:
    """One streamed response: the typed events, numbered, with one item open at a time."""

    def __init__(self, wire: ResponsesWire, run: Run) -> None:
        self.wire = wire
        self.run = run
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None
        self.text: list[str] = []
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[ToolCall] = []

    def _event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"

    async def events(self) -> AsyncIterator[str]:
        ended = False
        try:
            start = self.wire.response("in_progress", [])
            yield self._event("response.created", response=start)
            yield self._event("response.in_progress", response=start)
            async for event in self.run:
                if isinstance(event, Delta):
                    if event.reasoning:
                        for text in self._text("reasoning", event.reasoning):
                            yield text
                    if event.content:
                        for text in self._text("message", event.content):
                            yield text
                elif isinstance(event, ToolCallStart):
                    for text in [*self._close(), *self._open_call(event)]:
                        yield text
                elif isinstance(event, ToolCallArguments):
                    yield self._arguments(event)
                elif isinstance(event, ToolCall):
                    for text in self._call_done(event):
                        yield text
                elif isinstance(event, Finished):
                    for text in self._close():
                        yield text
                    if not self.content and not self.calls:
                        for text in [*self._open("message"), *self._close()]:
                            yield text
                    reply = Reply("".join(self.content), "".join(self.reasoning), event,
                                  tuple(self.calls))
                    body = self.wire._finish(reply, self.output)
                    kind = "response.incomplete" if body["status"] == "incomplete" \
                        else "response.completed"
                    yield self._event(kind, response=body)
                else:
                    for text in self._close():
                        yield text
                    status, error = to_status_and_body(event.error)
                    # The API's closed list of codes: ours goes into the message.
                    code = "invalid_prompt" if status < 500 else "server_error"
                    message = error["error"]["message"]
                    if error["error"]["code"]:
                        message = f"{message} ({error['error']['code']})"
                    failure = {"code": code, "message": message}
                    yield self._event("response.failed", response=self.wire.response(
                        "failed", self.output, error=failure))
            ended = True
        finally:
            if not ended:
                self.run.state.metrics.disconnects.inc()
                log.info("stream ended early; freeing its batch slot")
            self.run.close()

    def _text(self, kind: str, text: str) -> list[str]:
        events: list[str] = []
        if self.open is None or self.open["type"] != kind:
            events = [*self._close(), *self._open(kind)]
        assert self.open is not None
        self.text.append(text)
        (self.reasoning if kind == "reasoning" else self.content).append(text)
        delta = "response.reasoning_text.delta" if kind == "reasoning" \
            else "response.output_text.delta"
        extra: dict[str, Any] = {} if kind == "reasoning" else {"logprobs": []}
        return [*events, self._event(delta, item_id=self.open["id"], output_index=len(self.output),
                                     content_index=0, delta=text, **extra)]

    def _open(self, kind: str) -> list[str]:
        if kind == "reasoning":
            item = _reasoning_item(_item_id("rs"), "", "in_progress")
            part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
        else:
            item = _message_item(_item_id("msg"), "", "in_progress")
            part = _text_part("")
        self.open = item
        self.text = []
        where = {"item_id": item["id"], "output_index": len(self.output)}
        return [self._event("response.output_item.added", output_index=len(self.output),
                            item=item),
                self._event("response.content_part.added", **where, content_index=0,
                            part=part)]

    def _close(self) -> list[str]:
        item = self.open
        if item is None:
            return []
        self.open = None
        text = "".join(self.text)
        if item["type"] == "function_call":
            # A call that broke off: its text comes as message content, as without streaming.
            broken = {**item, "arguments": text, "status": "incomplete"}
            return [self._event("response.output_item.done", output_index=len(self.output),
                                item=broken)]
        where = {"item_id": item["id"], "output_index": len(self.output), "content_index": 0}
        if item["type"] == "reasoning":
            done = _reasoning_item(item["id"], text)
            events = [self._event("response.reasoning_text.done", **where, text=text)]
        else:
            done = _message_item(item["id"], text)
            events = [self._event("response.output_text.done", **where, text=text,
                                  logprobs=[])]
        events.append(self._event("response.content_part.done", **where,
                                  part=done["content"][0]))
        events.append(self._event("response.output_item.done", output_index=len(self.output),
                                  item=done))
        self.output.append(done)
        return events

    def _open_call(self, start: ToolCallStart) -> list[str]:
        self.open = _call_item(start, _item_id("fc"), status="in_progress")
        self.text = []
        return [self._event("response.output_item.added", output_index=len(self.output),
                            item=self.open)]

    def _arguments(self, piece: ToolCallArguments) -> str:
        assert self.open is not None and self.open["type"] == "function_call"
        self.text.append(piece.arguments)
        return self._event("response.function_call_arguments.delta", item_id=self.open["id"],
                           output_index=len(self.output), delta=piece.arguments)

    def _call_done(self, call: ToolCall) -> list[str]:
        assert self.open is not None and self.open["type"] == "function_call"
        ident, index = self.open["id"], len(self.output)
        self.open = None
        self.calls.append(call)
        done = _call_item(call, ident, call.arguments)
        self.output.append(done)
        return [self._event("response.function_call_arguments.done", item_id=ident,
                            output_index=index, name=call.name, arguments=call.arguments),
                self._event("response.output_item.done", output_index=index, item=done)]
