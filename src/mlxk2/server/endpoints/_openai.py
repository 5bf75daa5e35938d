"""What OpenAI's Chat Completions and Completions share: usage, and the chunked SSE stream."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from mlxk2.engine.events import Delta, Finished
from mlxk2.server._runs import Run
from mlxk2.server.errors import to_status_and_body

log = logging.getLogger("mlxk2.server")

Chunk = dict[str, Any]


def usage(done: Finished) -> dict[str, Any]:
    """OpenAI's usage block; ``cached_tokens`` counts prompt tokens reused from the prompt cache."""
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }


def sse(payload: Chunk | str) -> str:
    """One SSE ``data:`` message (a JSON object, or a literal such as ``[DONE]``)."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


async def chunk_stream(run: Run, head: Chunk | None, piece: Callable[[Delta], Chunk | None],
                       tail: Callable[[Finished], Chunk], include_usage: bool
                       ) -> AsyncIterator[str]:
    """SSE lines for one run, ending with ``[DONE]``; an abort becomes an error chunk.

    ``head`` is sent first (if any), ``piece`` renders each delta and ``tail`` the
    finish chunk; with ``include_usage`` a last chunk carries the usage.
    """
    finished = False
    try:
        if head:
            yield sse(head)
        async for event in run:
            if isinstance(event, Delta):
                chunk = piece(event)
                if chunk is not None:
                    yield sse(chunk)
            elif isinstance(event, Finished):
                yield sse(tail(event))
                if include_usage:
                    yield sse({**tail(event), "choices": [], "usage": usage(event)})
            else:
                _, body = to_status_and_body(event.error)
                yield sse(body)
        finished = True
        yield sse("[DONE]")
    finally:
        if not finished:
            run.state.metrics.disconnects.inc()
            log.info("stream ended early; freeing its batch slot")
        run.close()
