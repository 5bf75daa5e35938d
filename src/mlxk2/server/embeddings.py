"""``POST /v1/embeddings``: the OpenAI embeddings endpoint over the shared provider.

Models resolve, load, stay loaded and unload exactly as for chat (keep-alive,
LRU); the API key, admission queue, metrics and error shape are the app's own.
Inputs of concurrent requests share forward passes through the model's
:class:`~mlxk2.server.embed_batcher.EmbeddingBatcher`.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mlxk2.server._requests import parse_body, read_json
from mlxk2.server._state import ServerState, state_of
from mlxk2.server.errors import BadRequestError
from mlxk2.server.provider import LoadedEntry
from mlxk2.server.schemas import KeepAlive

#: Response header counting texts cut to the model's token limit (only when some were).
TRUNCATED_HEADER = "x-mlxk2-truncated-inputs"
MAX_INPUTS = 2048

TokenIds = Annotated[list[int], Field(min_length=1)]


class EmbeddingsRequest(BaseModel):
    """The OpenAI request body; any other field is a 400 that names it."""

    model_config = ConfigDict(strict=True, extra="forbid")
    model: str
    input: (str | Annotated[list[str], Field(min_length=1, max_length=MAX_INPUTS)]
            | TokenIds | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_INPUTS)])
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
    keep_alive: KeepAlive | None = None  # as on chat and completion requests


def register(app: FastAPI) -> None:
    """Add the route to ``app`` (built by :func:`mlxk2.server.app.create_app`)."""

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        state = state_of(request)
        req = parse_body(EmbeddingsRequest, await read_json(request,
                                                            state.config.max_body_bytes))
        texts, token_lists = _split_input(req.input)
        await state.admission.enter()
        try:
            entry = await state.provider.acquire(req.model, embedding=True,
                                                 keep_alive=req.keep_alive)
            try:
                return await _answer(state, entry, req, texts, token_lists)
            finally:
                state.provider.release(entry)
        finally:
            state.admission.leave()


def _split_input(value: Any) -> tuple[list[str] | None, list[list[int]] | None]:
    """Texts, or token-id lists: the four shapes OpenAI accepts."""
    if isinstance(value, str):
        value = [value]
    if value and isinstance(value[0], int):
        return None, [value]
    if value and isinstance(value[0], list):
        return None, value
    for i, text in enumerate(value):
        if not text:
            raise BadRequestError(f"input[{i}] is an empty string.", param="input")
    return value, None


async def _answer(state: ServerState, entry: LoadedEntry, req: EmbeddingsRequest,
                  texts: list[str] | None, token_lists: list[list[int]] | None) -> JSONResponse:
    from mlxk2.engine.embed import matryoshka

    assert entry.embedder is not None
    encoder = entry.embedder.loaded
    if req.dimensions is not None and req.dimensions > encoder.dimensions:
        raise BadRequestError(f"dimensions must be at most {encoder.dimensions} for "
                              f"'{entry.name}'.", param="dimensions")
    truncated = 0
    if texts is not None:
        tokenized = await asyncio.to_thread(encoder.tokenize, texts)
        inputs: Sequence[Sequence[int]] = [t.ids for t in tokenized]
        truncated = sum(t.truncated for t in tokenized)
    else:
        assert token_lists is not None
        inputs = token_lists
        for i, ids in enumerate(inputs):
            if len(ids) > encoder.max_tokens:
                raise BadRequestError(f"input[{i}] has {len(ids)} tokens; '{entry.name}' takes "
                                      f"at most {encoder.max_tokens}.", param="input")
            if any(not 0 <= t < encoder.vocab_size for t in ids):
                raise BadRequestError(f"input[{i}] holds a token id outside the vocabulary.",
                                      param="input")
    vectors = await entry.embedder.embed(inputs)
    vectors = matryoshka(vectors, req.dimensions, normalize=True)
    tokens = sum(len(ids) for ids in inputs)
    state.metrics.prompt_tokens.inc(tokens)
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": _encode(v, req.encoding_format)}
                 for i, v in enumerate(vectors)],
        "model": entry.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    headers = {TRUNCATED_HEADER: str(truncated)} if truncated else None
    return JSONResponse(body, headers=headers)


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    """Floats, or base64 of little-endian float32 (what OpenAI clients decode)."""
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
