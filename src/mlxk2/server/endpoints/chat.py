"""``POST /v1/chat/completions``: messages through the chat template, answer and reasoning apart.

The request is translated into a :class:`ChatInput`, the typed core input that
any chat-shaped endpoint can build from its own wire format; it builds the
prompt (tools included) and says what the core must do with the reply (a
grammar, tool-call parsing). :class:`ChatWire` only renders the core's events.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlxk2.engine.events import (
    Delta,
    Finished,
    Reply,
    ToolCall,
    ToolCallArguments,
    ToolCallEvent,
    ToolCallStart,
)
from mlxk2.engine.tools import ToolChoice, ToolFunction
from mlxk2.errors import ValidationError
from mlxk2.server._requests import check_prompt_size, read_body
from mlxk2.server._runs import Prompt, Run, respond
from mlxk2.server.endpoints._openai import (
    Chunk,
    chat_logprobs,
    check_constraint,
    chunk_stream,
    response_constraint,
    usage,
)
from mlxk2.server.errors import BadRequestError
from mlxk2.server.openapi import ChatCompletion, answers, json_body
from mlxk2.server.provider import LoadedEntry
from mlxk2.server.schemas import ChatCompletionRequest

if TYPE_CHECKING:
    from mlxk2.engine.constraints import ConstraintSpec

router = APIRouter()


@router.post("/v1/chat/completions", openapi_extra=json_body(ChatCompletionRequest),
             responses=answers(ChatCompletion, streams=True, errors=(404, 500, 507)))
async def chat_completions(request: Request) -> Response:
    req = await read_body(request, ChatCompletionRequest)
    chat = chat_input(req)
    return await respond(request, req, chat.prompt,
                         lambda run: ChatWire(run, req.include_usage()))


@dataclass(frozen=True)
class ChatInput:
    """What a chat request asks of the core, whatever wire format it arrived in.

    Attributes:
        messages: OpenAI-shaped messages: ``role``, ``content`` text, assistant
            ``tool_calls`` (arguments as JSON text) and ``tool`` messages with
            ``tool_call_id``.
        tools: The functions the model may call.
        tool_choice: ``none``, ``auto``, ``required`` or one named function.
        parallel_tool_calls: Whether one reply may hold several calls (forced choices).
        response_format: The grammar plain replies must match, if any.
        thinking: Turn the model's reasoning on or off (``enable_thinking``, for
            templates that read it); None keeps mlx-lm's default for the model.
    """

    messages: tuple[dict[str, Any], ...]
    tools: tuple[ToolFunction, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    response_format: ConstraintSpec | None = None
    thinking: bool | None = None

    def prompt(self, entry: LoadedEntry) -> Prompt:
        """The prompt for the loaded model, with the reply's grammar and tool parsing.

        A forced tool choice's grammar takes the place of ``response_format``: the
        reply is then only tool calls.

        Raises:
            BadRequestError: the template rejects the messages, a grammar does not
                compile, or the named function is not offered.
        """
        from mlxk2.engine.chat import opens_reasoning
        from mlxk2.engine.tools import forced_call_grammar, tool_calling

        tokenizer = entry.loaded.tokenizer
        tokens = _template(entry, self)
        try:
            forced = forced_call_grammar(self.tools, self.tool_choice, self.parallel_tool_calls)
        except ValidationError as exc:
            raise BadRequestError(exc.message, param="tool_choice") from exc
        check_constraint(entry, forced, "tools")
        constraint = forced or self.response_format
        if forced is None:
            check_constraint(entry, self.response_format, "response_format")
        return Prompt(
            tokens=tokens,
            in_reasoning=None if constraint else opens_reasoning(tokenizer, tokens),
            constraint=constraint,
            tools=tool_calling(tokenizer, self.tools, self.tool_choice),
        )

    def text_chars(self) -> int:
        """Characters of client text the template renders: message text, reasoning,
        tool calls and the tools offered (the length bound's input)."""
        chars = sum(len(t.name) + len(t.description) + len(t.parameters) for t in self.tools)
        for message in self.messages:
            chars += len(message.get("content") or "") + len(
                message.get("reasoning_content") or "")
            if message.get("tool_calls"):
                chars += len(json.dumps(message["tool_calls"], ensure_ascii=False))
        return chars

    @property
    def uses_tools(self) -> bool:
        """Tools are offered, or the history holds tool turns."""
        return bool(self.tools) or any(
            m.get("tool_calls") or m["role"] == "tool" for m in self.messages)


def _template(entry: LoadedEntry, chat: ChatInput) -> list[int]:
    """The templated prompt; a template's complaint is a 400 naming ``messages``."""
    from mlxk2.engine.chat import build_prompt_tokens
    from mlxk2.engine.tools import build_tool_prompt

    check_prompt_size(entry, chat.text_chars(), "messages")
    tokenizer = entry.loaded.tokenizer
    # mlx-lm renames enable_thinking for templates that call it ``thinking``.
    options = None if chat.thinking is None else {"enable_thinking": chat.thinking}
    try:
        if chat.uses_tools:
            return build_tool_prompt(tokenizer, chat.messages, chat.tools, chat.tool_choice,
                                     options)
        return build_prompt_tokens(tokenizer, list(chat.messages), options=options)
    except (ValueError, TypeError, LookupError) as exc:
        raise BadRequestError(f"The chat template rejected the messages: {exc}",
                              param="messages") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("jinja2"):
            raise BadRequestError(f"The chat template rejected the messages: {exc}",
                                  param="messages") from exc
        raise


def chat_input(req: ChatCompletionRequest) -> ChatInput:
    """Translate a Chat Completions body; every unsupported field is a 400 naming it."""
    if req.audio is not None:
        raise BadRequestError("Audio output is not supported.", param="audio")
    if req.modalities and any(m != "text" for m in req.modalities):
        raise BadRequestError("Only the 'text' modality is supported.", param="modalities")
    if req.top_logprobs is not None and not req.logprobs:
        raise BadRequestError("top_logprobs needs logprobs: true.", param="top_logprobs")
    tools = _tools(req)
    return ChatInput(
        messages=tuple(_messages(req)),
        tools=tools,
        tool_choice=_tool_choice(req, tools),
        parallel_tool_calls=req.parallel_tool_calls is not False,
        response_format=response_constraint(req.response_format),
    )


def _messages(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    out = []
    for i, message in enumerate(req.messages):
        part = message.non_text_part()
        if part is not None:
            raise BadRequestError(f"Content part type '{part}' is not supported.",
                                  param=f"messages.{i}.content")
        entry: dict[str, Any] = {"role": message.role, "content": message.text()}
        if message.tool_calls:
            for j, call in enumerate(message.tool_calls):
                if call.get("type", "function") != "function" or not isinstance(
                        call.get("function"), dict):
                    raise BadRequestError("Only function tool calls are supported.",
                                          param=f"messages.{i}.tool_calls.{j}")
            entry["tool_calls"] = message.tool_calls
        if message.tool_call_id is not None:
            entry["tool_call_id"] = message.tool_call_id
        if message.name is not None:
            entry["name"] = message.name
        out.append(entry)
    return out


def _tools(req: ChatCompletionRequest) -> tuple[ToolFunction, ...]:
    functions = []
    for i, tool in enumerate(req.tools or []):
        if tool.get("type") != "function":
            raise BadRequestError(f"Tool type {tool.get('type')!r} is not supported; "
                                  "only 'function'.", param=f"tools.{i}.type")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise BadRequestError("A tool needs a function with a name.",
                                  param=f"tools.{i}.function")
        functions.append(function_tool(function, "parameters", f"tools.{i}.function"))
    return tuple(functions)


def function_tool(spec: dict[str, Any], schema_key: str, param: str) -> ToolFunction:
    """One client function from any endpoint's wire shape.

    ``spec`` holds ``name``, ``description`` and the arguments' JSON schema under
    ``schema_key`` (``parameters`` for OpenAI, ``input_schema`` for Anthropic);
    ``param`` locates it in the request for error messages.
    """
    name = spec.get("name")
    if not isinstance(name, str):
        raise BadRequestError("A tool needs a name.", param=f"{param}.name")
    schema = spec.get(schema_key) or {"type": "object", "properties": {}}
    if not isinstance(schema, dict):
        raise BadRequestError(f"A tool's {schema_key} must be a JSON schema object.",
                              param=f"{param}.{schema_key}")
    return ToolFunction(name, str(spec.get("description") or ""),
                        json.dumps(schema, sort_keys=True))


def _tool_choice(req: ChatCompletionRequest, tools: tuple[ToolFunction, ...]) -> ToolChoice:
    choice = req.tool_choice
    if choice is None:
        return ToolChoice("auto" if tools else "none")
    if choice in ("none", "auto", "required"):
        if choice == "required" and not tools:
            raise BadRequestError("tool_choice 'required' needs tools.", param="tool_choice")
        return ToolChoice(choice)  # type: ignore[arg-type]
    if isinstance(choice, dict) and choice.get("type") == "function" \
            and isinstance(choice.get("function"), dict) \
            and isinstance(choice["function"].get("name"), str):
        name = choice["function"]["name"]
        if name not in {t.name for t in tools}:
            raise BadRequestError(f"tool_choice names '{name}', which is not in tools.",
                                  param="tool_choice")
        return ToolChoice("function", name)
    raise BadRequestError("tool_choice must be 'none', 'auto', 'required' or "
                          "{'type': 'function', 'function': {'name': ...}}.", param="tool_choice")


def _tool_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": call.arguments}}


class ChatWire:
    """Chat Completions' JSON body and ``chat.completion.chunk`` stream."""

    def __init__(self, run: Run, include_usage: bool) -> None:
        self.ident = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = run.entry.name
        self.fingerprint = run.fingerprint
        self.include_usage = include_usage

    def body(self, replies: list[Reply]) -> dict[str, Any]:
        return {
            "id": self.ident, "object": "chat.completion", "created": self.created,
            "model": self.model, "system_fingerprint": self.fingerprint,
            "choices": [self._choice(i, reply) for i, reply in enumerate(replies)],
            "usage": usage([r.finished for r in replies]),
        }

    def _choice(self, index: int, reply: Reply) -> dict[str, Any]:
        only_calls = bool(reply.tool_calls) and not reply.content.strip()
        message: dict[str, Any] = {"role": "assistant",
                                   "content": None if only_calls else reply.content}
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning
        if reply.tool_calls:
            message["tool_calls"] = [_tool_call(c) for c in reply.tool_calls]
        logprobs = chat_logprobs(reply.logprobs) if reply.logprobs else None
        return {"index": index, "message": message, "logprobs": logprobs,
                "finish_reason": reply.finished.finish_reason}

    def stream(self, run: Run) -> AsyncIterator[str]:
        return chunk_stream(run, head=lambda c: self._chunk({"role": "assistant",
                                                             "content": ""}, c),
                            piece=self._piece, tail=self._tail,
                            include_usage=self.include_usage)

    def _chunk(self, delta: dict[str, Any], choice: int, finish: str | None = None,
               logprobs: dict[str, Any] | None = None) -> Chunk:
        extra = {"usage": None} if self.include_usage else {}
        return {"id": self.ident, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": self.fingerprint,
                "choices": [{"index": choice, "delta": delta, "logprobs": logprobs,
                             "finish_reason": finish}], **extra}

    def _piece(self, event: Delta | ToolCallEvent) -> list[Chunk]:
        """OpenAI's shape for a call: its first chunk has the id and name, then the
        arguments follow in pieces that join to the JSON text."""
        if isinstance(event, ToolCallStart):
            head = {"index": event.index, "id": event.id, "type": "function",
                    "function": {"name": event.name, "arguments": ""}}
            return [self._chunk({"tool_calls": [head]}, event.choice)]
        if isinstance(event, ToolCallArguments):
            piece = {"index": event.index, "function": {"arguments": event.arguments}}
            return [self._chunk({"tool_calls": [piece]}, event.choice)]
        if isinstance(event, ToolCall):
            return []
        delta: dict[str, Any] = {}
        if event.reasoning:
            delta["reasoning_content"] = event.reasoning
        if event.content:
            delta["content"] = event.content
        if not delta and not event.logprobs:
            return []
        logprobs = chat_logprobs(event.logprobs) if event.logprobs else None
        return [self._chunk(delta, event.choice, logprobs=logprobs)]

    def _tail(self, done: Finished) -> Chunk:
        return self._chunk({}, done.choice, done.finish_reason)
