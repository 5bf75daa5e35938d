"""What OpenAI's Chat Completions and Completions share: usage, logprobs, response_format,
and the chunked SSE stream."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from mlxk2.engine.events import (
    Delta,
    Finished,
    TokenLogprob,
    ToolCall,
    ToolCallArguments,
    ToolCallEvent,
    ToolCallStart,
)
from mlxk2.server._runs import Run
from mlxk2.server.errors import BadRequestError, to_status_and_body
from mlxk2.server.provider import LoadedEntry

if TYPE_CHECKING:
    from mlxk2.engine.constraints import ConstraintSpec

log = logging.getLogger("mlxk2.server")

Chunk = dict[str, Any]


def usage(done: Sequence[Finished]) -> dict[str, Any]:
    """OpenAI's usage block over every choice; the shared prompt counts once.

    ``cached_tokens`` counts prompt tokens reused from the prompt cache.
    """
    first = done[0]
    completion = sum(d.completion_tokens for d in done)
    return {
        "prompt_tokens": first.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": first.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": first.cached_tokens},
    }


def response_constraint(response_format: dict[str, Any] | None) -> ConstraintSpec | None:
    """The grammar a ``response_format`` asks for (None for plain text).

    Raises:
        BadRequestError: an unknown type or a malformed ``json_schema``, naming
            ``response_format``.
    """
    from mlxk2.engine.constraints import JSON_OBJECT, ConstraintSpec

    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return JSON_OBJECT
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema", {"type": "object"}) if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise BadRequestError("response_format.json_schema must hold a 'schema' object.",
                                  param="response_format")
        return ConstraintSpec.json_schema(schema)
    raise BadRequestError(f"response_format type {kind!r} is not supported; use 'text', "
                          "'json_object' or 'json_schema'.", param="response_format")


def check_constraint(entry: LoadedEntry, spec: ConstraintSpec | None, param: str) -> None:
    """Compile ``spec`` for the model now, so a bad grammar is a 400 naming ``param``."""
    from mlxk2.engine.constraints import ConstraintError, compiler_for

    if spec is None:
        return
    try:
        compiler_for(entry.loaded).check(spec)
    except ConstraintError as exc:
        raise BadRequestError(exc.message, param=param) from exc


def _logprob_entry(item: TokenLogprob) -> dict[str, Any]:
    return {"token": item.token, "logprob": item.logprob, "bytes": list(item.bytes)}


def chat_logprobs(items: Sequence[TokenLogprob]) -> dict[str, Any]:
    """Chat's ``choices[].logprobs``: one entry per token, with its top alternatives."""
    return {"content": [{**_logprob_entry(t), "top_logprobs": [_logprob_entry(a)
                                                                for a in t.top]}
                        for t in items],
            "refusal": None}


def text_logprobs(items: Sequence[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """Completions' legacy ``logprobs``: parallel lists, alternatives as token-to-value maps."""
    offsets = []
    for item in items:
        offsets.append(offset)
        offset += len(item.token)
    return {
        "tokens": [t.token for t in items],
        "token_logprobs": [t.logprob for t in items],
        "top_logprobs": [{a.token: a.logprob for a in t.top} for t in items],
        "text_offset": offsets,
    }


def sse(payload: Chunk | str) -> str:
    """One SSE ``data:`` message (a JSON object, or a literal such as ``[DONE]``)."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


async def chunk_stream(run: Run, head: Callable[[int], Chunk] | None,
                       piece: Callable[[Delta | ToolCallEvent], list[Chunk]],
                       tail: Callable[[Finished], Chunk], include_usage: bool
                       ) -> AsyncIterator[str]:
    """SSE lines for one run, ending with ``[DONE]``; an abort becomes an error chunk.

    ``head`` renders the first chunk of each choice (if any), ``piece`` renders
    each delta and tool-call event and ``tail`` each choice's finish chunk; with
    ``include_usage`` a last chunk carries the usage of all choices.
    """
    finished = False
    done: list[Finished] = []
    try:
        if head:
            for choice in range(run.choices):
                yield sse(head(choice))
        async for event in run:
            if isinstance(event, (Delta, ToolCallStart, ToolCallArguments, ToolCall)):
                for chunk in piece(event):
                    yield sse(chunk)
            elif isinstance(event, Finished):
                done.append(event)
                yield sse(tail(event))
            else:
                _, body = to_status_and_body(event.error)
                yield sse(body)
        if include_usage and done:
            yield sse({**tail(done[0]), "choices": [], "usage": usage(done)})
        finished = True
        yield sse("[DONE]")
    finally:
        if not finished:
            run.state.metrics.disconnects.inc()
            log.info("stream ended early; freeing its batch slot")
        run.close()
