"""``POST /v1/chat/completions``: messages through the chat template, answer and reasoning apart."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlxk2.engine.events import Delta, Finished, Reply
from mlxk2.server._requests import read_body
from mlxk2.server._runs import Run, respond
from mlxk2.server.endpoints._openai import Chunk, chunk_stream, usage
from mlxk2.server.errors import BadRequestError
from mlxk2.server.provider import LoadedEntry
from mlxk2.server.schemas import ChatCompletionRequest

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    req = await read_body(request, ChatCompletionRequest)
    messages = _messages(req)

    def prompt_for(entry: LoadedEntry) -> tuple[list[int], bool | None]:
        return _chat_prompt(entry, messages)

    return await respond(request, req, prompt_for,
                         lambda model: ChatWire(model, req.include_usage()))


def _messages(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    for i, message in enumerate(req.messages):
        part = message.non_text_part()
        if part is not None:
            raise BadRequestError(f"Content part type '{part}' is not supported.",
                                  param=f"messages.{i}.content")
    return [{"role": m.role, "content": m.text()} for m in req.messages]


def _chat_prompt(entry: LoadedEntry, messages: list[dict[str, Any]]
                 ) -> tuple[list[int], bool | None]:
    """The templated prompt, and whether the template already opened ``<think>``."""
    from mlxk2.engine.chat import build_prompt_tokens, opens_reasoning

    tokenizer = entry.loaded.tokenizer
    try:
        tokens = build_prompt_tokens(tokenizer, messages)
    except (ValueError, TypeError, LookupError) as exc:
        raise BadRequestError(f"The chat template rejected the messages: {exc}",
                              param="messages") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("jinja2"):
            raise BadRequestError(f"The chat template rejected the messages: {exc}",
                                  param="messages") from exc
        raise
    return tokens, opens_reasoning(tokenizer, tokens)


class ChatWire:
    """Chat Completions' JSON body and ``chat.completion.chunk`` stream."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.ident = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def body(self, reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning
        return {
            "id": self.ident, "object": "chat.completion", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": reply.finished.finish_reason}],
            "usage": usage(reply.finished),
        }

    def stream(self, run: Run) -> AsyncIterator[str]:
        return chunk_stream(run, head=self._chunk({"role": "assistant", "content": ""}),
                            piece=self._piece, tail=self._tail,
                            include_usage=self.include_usage)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> Chunk:
        extra = {"usage": None} if self.include_usage else {}
        return {"id": self.ident, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}], **extra}

    def _piece(self, event: Delta) -> Chunk | None:
        delta: dict[str, Any] = {}
        if event.reasoning:
            delta["reasoning_content"] = event.reasoning
        if event.content:
            delta["content"] = event.content
        return self._chunk(delta) if delta else None

    def _tail(self, done: Finished) -> Chunk:
        return self._chunk({}, done.finish_reason)
