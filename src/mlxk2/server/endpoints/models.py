"""``GET /v1/models`` and ``GET /v1/models/{id}``: the runnable models in the cache."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, Request

from mlxk2.errors import MlxkError, ModelNotFoundError
from mlxk2.server._state import ServerState, state_of

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    entries = await asyncio.to_thread(_runnable_models, state_of(request))
    return {"object": "list", "data": entries}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    """A model by id, or by any name a completion request accepts (``demo-chat``)."""
    state = state_of(request)
    entries = {e["id"]: e for e in await asyncio.to_thread(_runnable_models, state)}
    if model_id not in entries:
        with contextlib.suppress(MlxkError):
            model_id = (await asyncio.to_thread(state.provider.runnable, model_id)).name
    if model_id in entries:
        return entries[model_id]
    raise ModelNotFoundError(f"The model '{model_id}' does not exist.")


def _runnable_models(state: ServerState) -> list[dict[str, Any]]:
    return [
        {"id": name, "object": "model", "created": int(modified),
         "owned_by": name.split("/", 1)[0] if "/" in name and not name.startswith(("/", ".", "~"))
         else "local", "capabilities": list(capabilities)}
        for name, modified, capabilities in state.provider.list_runnable()
    ]
