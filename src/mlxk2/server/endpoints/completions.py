"""``POST /v1/completions``: raw text or token prompts, text left unsplit."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlxk2.engine.events import Delta, Finished, Reply, ToolCallEvent
from mlxk2.server._requests import check_prompt_size, read_body
from mlxk2.server._runs import Prompt, Run, respond
from mlxk2.server.endpoints._openai import (
    Chunk,
    check_constraint,
    chunk_stream,
    response_constraint,
    text_logprobs,
    usage,
)
from mlxk2.server.errors import BadRequestError
from mlxk2.server.openapi import TextCompletion, answers, json_body
from mlxk2.server.provider import LoadedEntry
from mlxk2.server.schemas import CompletionRequest

router = APIRouter()


@router.post("/v1/completions", openapi_extra=json_body(CompletionRequest),
             responses=answers(TextCompletion, streams=True, errors=(404, 500, 507)))
async def completions(request: Request) -> Response:
    req = await read_body(request, CompletionRequest)
    if req.echo:
        raise BadRequestError("echo is not supported.", param="echo")
    if req.suffix:
        raise BadRequestError("suffix is not supported.", param="suffix")
    if req.best_of is not None and req.best_of > 1:
        raise BadRequestError("best_of above 1 is not supported; use n.", param="best_of")
    constraint = response_constraint(req.response_format)

    def prompt_for(entry: LoadedEntry) -> Prompt:
        check_constraint(entry, constraint, "response_format")
        return Prompt(_raw_prompt(entry, req.prompt), None, constraint)

    return await respond(request, req, prompt_for,
                         lambda run: TextWire(run, req.include_usage()))


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
        prompt = str(prompt[0])
    check_prompt_size(entry, len(prompt), "prompt")
    return raw_prompt_tokens(entry.loaded.tokenizer, prompt)


class TextWire:
    """Completions' JSON body and ``text_completion`` stream."""

    def __init__(self, run: Run, include_usage: bool) -> None:
        self.ident = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = run.entry.name
        self.fingerprint = run.fingerprint
        self.include_usage = include_usage
        self._offsets = [0] * run.choices

    def body(self, replies: list[Reply]) -> dict[str, Any]:
        return {
            "id": self.ident, "object": "text_completion", "created": self.created,
            "model": self.model, "system_fingerprint": self.fingerprint,
            "choices": [{"index": i, "text": r.content,
                         "logprobs": text_logprobs(r.logprobs) if r.logprobs else None,
                         "finish_reason": r.finished.finish_reason}
                        for i, r in enumerate(replies)],
            "usage": usage([r.finished for r in replies]),
        }

    def stream(self, run: Run) -> AsyncIterator[str]:
        return chunk_stream(run, head=None, piece=self._piece, tail=self._tail,
                            include_usage=self.include_usage)

    def _chunk(self, text: str, choice: int, finish: str | None = None,
               logprobs: dict[str, Any] | None = None) -> Chunk:
        extra = {"usage": None} if self.include_usage else {}
        return {"id": self.ident, "object": "text_completion", "created": self.created,
                "model": self.model, "system_fingerprint": self.fingerprint,
                "choices": [{"index": choice, "text": text, "logprobs": logprobs,
                             "finish_reason": finish}], **extra}

    def _piece(self, event: Delta | ToolCallEvent) -> list[Chunk]:
        if not isinstance(event, Delta) or not (event.content or event.logprobs):
            return []
        logprobs = None
        if event.logprobs:
            logprobs = text_logprobs(event.logprobs, self._offsets[event.choice])
            self._offsets[event.choice] += sum(len(t.token) for t in event.logprobs)
        return [self._chunk(event.content, event.choice, logprobs=logprobs)]

    def _tail(self, done: Finished) -> Chunk:
        return self._chunk("", done.choice, done.finish_reason)
