"""``GET /health`` and ``GET /metrics``: liveness, loaded models and Prometheus counters."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlxk2 import __version__
from mlxk2.server._state import state_of
from mlxk2.server.memory import rss_bytes
from mlxk2.server.openapi import Health, answers

router = APIRouter()


@router.get("/health", responses=answers(Health))
async def health(request: Request) -> dict[str, Any]:
    state = state_of(request)
    body: dict[str, Any] = {
        "status": "shutting_down" if state.draining else "ok",
        "version": __version__,
        "models": state.provider.describe(),
        "loaded_models": state.provider.loaded_names(),
        "uptime_seconds": round(time.time() - state.started, 3),
        "rss_bytes": rss_bytes(),
        "blas": _blas_state(),
    }
    cluster = state.provider.worker.cluster()
    if cluster is not None:
        body["distributed"] = cluster
    return body


def _blas_state() -> dict[str, Any] | None:
    """This process's BLAS binding: bound when serve starts, else by the first model load
    (None before)."""
    from mlxk2.engine.blas import blas_status

    status = blas_status()
    return None if status is None else status.to_dict()


@router.get("/metrics", response_class=Response,
            responses=answers(None, media_type="text/plain"))
async def metrics(request: Request) -> Response:
    state = state_of(request)
    return Response(state.metrics.render(), media_type=state.metrics.content_type)
