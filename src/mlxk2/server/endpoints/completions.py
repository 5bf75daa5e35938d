"""``POST /v1/completions``: raw text or token prompts, text left unsplit."""

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
from mlxk2.server.schemas import CompletionRequest

router = APIRouter()


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    req = await read_body(request, CompletionRequest)

    def prompt_for(entry: LoadedEntry) -> tuple[list[int], bool | None]:
        return _raw_prompt(entry, req.prompt), None

    return await respond(request, req, prompt_for,
                         lambda model: TextWire(model, req.include_usage()))


def _raw_prompt(entry: LoadedEntry, prompt: str | list[str] | list[int]) -> list[int]:
    """Token ids as given (checked against the vocabulary), or one text prompt tokenized."""
    from mlxk2.engine.chat import raw_prompt_tokens

    if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        ids = [t for t in prompt if isinstance(t, int)]
        vocab = len(entry.loaded.tokenizer)
        if any(not 0 <= t < vocab for t in ids):
            raise BadRequestError("Prompt token id out of range.", param="prompt")
        return ids
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise BadRequestError("Only one prompt per request is supported.", param="prompt")
        return raw_prompt_tokens(entry.loaded.tokenizer, str(prompt[0]))
    return raw_prompt_tokens(entry.loaded.tokenizer, prompt)


class TextWire:
    """Completions' JSON body and ``text_completion`` stream."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.ident = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def body(self, reply: Reply) -> dict[str, Any]:
        return {
            "id": self.ident, "object": "text_completion", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "text": reply.content, "logprobs": None,
                         "finish_reason": reply.finished.finish_reason}],
            "usage": usage(reply.finished),
        }

    def stream(self, run: Run) -> AsyncIterator[str]:
        return chunk_stream(run, head=None, piece=self._piece, tail=self._tail,
                            include_usage=self.include_usage)

    def _chunk(self, text: str, finish: str | None = None) -> Chunk:
        extra = {"usage": None} if self.include_usage else {}
        return {"id": self.ident, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": None,
                             "finish_reason": finish}], **extra}

    def _piece(self, event: Delta) -> Chunk | None:
        return self._chunk(event.content) if event.content else None

    def _tail(self, done: Finished) -> Chunk:
        return self._chunk("", done.finish_reason)
