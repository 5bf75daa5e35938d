"""The model lifecycle, seen and steered: ``/v1/models``, ``/v1/ps``, load and unload.

Model items carry extension fields beside OpenAI's ``id``/``object``/``created``/
``owned_by``: ``capabilities``, ``context_length``, ``size_bytes`` and ``loaded``,
and for a loaded model ``memory_bytes``, ``active_requests``, ``queued_requests``,
``keep_alive_seconds`` (null: never) and ``expires_at`` (null while busy or never).
Load and unload follow the API key (the gate) and the same folder rules as a
completion request (:meth:`ModelProvider.runnable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from mlxk2.errors import MlxkError, ModelNotFoundError
from mlxk2.server._requests import parse_body, read_json
from mlxk2.server._state import state_of
from mlxk2.server.provider import LoadedEntry, ModelProvider
from mlxk2.server.schemas import KeepAlive

if TYPE_CHECKING:
    from mlxk2.cache.inspect import ModelInfo

router = APIRouter()


class LoadRequest(BaseModel):
    """The optional body of a load; any other field is a 400 naming it."""

    model_config = ConfigDict(strict=True, extra="forbid")
    keep_alive: KeepAlive | None = None


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _owner(name: str) -> str:
    if "/" in name and not name.startswith(("/", ".", "~")):
        return name.split("/", 1)[0]
    return "local"


def load_state(provider: ModelProvider, entry: LoadedEntry) -> dict[str, Any]:
    """The fields a loaded model adds to its item."""
    remaining = provider.seconds_to_unload(entry)
    active, queued = provider.request_counts(entry)
    return {
        "memory_bytes": entry.memory_bytes,
        "active_requests": active,
        "queued_requests": queued,
        "keep_alive_seconds": None if math.isinf(entry.keep_alive) else entry.keep_alive,
        "expires_at": None if remaining is None else _iso(time.time() + remaining),
    }


def model_item(provider: ModelProvider, info: ModelInfo,
               entry: LoadedEntry | None) -> dict[str, Any]:
    """One ``/v1/models`` item: OpenAI's fields, then ours."""
    item: dict[str, Any] = {
        "id": info.name, "object": "model", "created": int(info.last_modified),
        "owned_by": _owner(info.name),
        "capabilities": list(info.capabilities),
        "context_length": info.context_length,
        "size_bytes": info.size_bytes,
        "loaded": entry is not None,
    }
    if entry is not None:
        item.update(load_state(provider, entry))
    return item


async def _items(provider: ModelProvider) -> list[dict[str, Any]]:
    infos = await asyncio.to_thread(provider.catalog)
    loaded = {entry.name: entry for entry in provider.loaded_entries()}
    return [model_item(provider, info, loaded.get(info.name)) for info in infos]


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": await _items(state_of(request).provider)}


@router.get("/v1/ps")
async def loaded_models(request: Request) -> dict[str, Any]:
    """Loaded models, least recently used first (the next one an LRU eviction drops)."""
    provider = state_of(request).provider
    return {"object": "list",
            "data": [model_item(provider, e.info, e) for e in provider.loaded_entries()]}


@router.post("/v1/models/{model_id:path}/load")
async def load_model(model_id: str, request: Request) -> dict[str, Any]:
    """Load a model now (or find it loaded), optionally setting its keep-alive."""
    state = state_of(request)
    body = LoadRequest()
    if request.headers.get("content-length", "0") != "0" or \
            "transfer-encoding" in request.headers:
        body = parse_body(LoadRequest, await read_json(request, state.config.max_body_bytes))
    provider = state.provider
    target = await asyncio.to_thread(provider.runnable, model_id, embedding=None)
    entry = await provider.acquire(model_id, embedding=target.embedding,
                                   keep_alive=body.keep_alive)
    provider.release(entry)
    return model_item(provider, entry.info, entry)


@router.post("/v1/models/{model_id:path}/unload")
async def unload_model(model_id: str, request: Request) -> JSONResponse:
    """Unload a model; a busy one unloads when its requests end (202)."""
    entry = await state_of(request).provider.unload_named(model_id)
    still_loaded = entry is not None and entry.active > 0
    return JSONResponse(
        {"id": model_id if entry is None else entry.name, "object": "model",
         "was_loaded": entry is not None, "loaded": still_loaded},
        status_code=202 if still_loaded else 200,
    )


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    """A model by id, or by any name a request accepts (``demo-chat``)."""
    provider = state_of(request).provider
    items = {item["id"]: item for item in await _items(provider)}
    if model_id not in items:
        with contextlib.suppress(MlxkError):
            model_id = (await asyncio.to_thread(provider.runnable, model_id,
                                                embedding=None)).name
    if model_id in items:
        return items[model_id]
    raise ModelNotFoundError(f"The model '{model_id}' does not exist.")
