"""The FastAPI app factory: the endpoints over the provider and its MLX worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlxk2 import __version__
from mlxk2.errors import MlxkError
from mlxk2.server import ui
from mlxk2.server._runs import ClientGoneError
from mlxk2.server._state import Admission, ServerState
from mlxk2.server.auth import ApiKeyGate
from mlxk2.server.config import ServerConfig
from mlxk2.server.embeddings import register as register_embeddings
from mlxk2.server.endpoints import ROUTERS
from mlxk2.server.errors import (
    ApiError,
    ServiceUnavailableError,
    anthropic_body,
    error_body,
    to_status_and_body,
)
from mlxk2.server.metrics import Metrics
from mlxk2.server.provider import ModelProvider

log = logging.getLogger("mlxk2.server")


def create_app(config: ServerConfig, provider: ModelProvider,
               metrics: Metrics | None = None) -> FastAPI:
    """Build the ASGI app around an injected provider (which owns the MLX worker).

    Args:
        config: Server settings.
        provider: Model lifecycle; its worker thread is started here if needed.
        metrics: Prometheus instruments; a fresh registry when omitted.
    """
    metrics = metrics or Metrics()
    state = ServerState(config, provider, metrics,
                        Admission(config.max_concurrency, config.max_queue, metrics))
    provider.on_change = lambda count: metrics.loaded_models.set(count)
    metrics.loaded_models.set(len(provider.loaded_names()))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        provider.worker.start()
        reaper = asyncio.create_task(_reap_forever(provider))
        try:
            yield
        finally:
            state.begin_shutdown()
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            await provider.close()
            provider.worker.stop()

    app = FastAPI(title="mlxk2", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.mlxk = state
    _install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    register_embeddings(app)
    if config.ui:
        ui.register(app)
    app.add_middleware(_Gate, state=state, gate=ApiKeyGate(config.api_key))
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "x-api-key", "anthropic-version"],
        )
    return app


async def _reap_forever(provider: ModelProvider) -> None:
    interval = 1.0 if provider.keep_alive is None else min(1.0, max(provider.keep_alive / 4, 0.05))
    while True:
        await asyncio.sleep(interval)
        try:
            await provider.reap_idle()
        except Exception:
            log.exception("unloading idle models failed")


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        status, body = to_status_and_body(exc)
        if status >= 500 and status != 503 and status != 507:
            log.error("request failed", exc_info=exc)
        return JSONResponse(shaped(request.url.path, status, body), status_code=status)

    async def client_gone(request: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # nobody reads it; it labels the metrics

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        body = shaped(request.url.path, exc.status_code, error_body(str(exc.detail), kind))
        return JSONResponse(body, status_code=exc.status_code)

    app.add_exception_handler(Exception, api_error)
    app.add_exception_handler(MlxkError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(ClientGoneError, client_gone)


class _Gate:
    """Pure-ASGI front door: drain refusal, auth, body limit and request metrics."""

    def __init__(self, app: Any, state: ServerState, gate: ApiKeyGate) -> None:
        self.app = app
        self.state = state
        self.gate = gate

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        endpoint = _endpoint_label(path)
        status_seen: list[int] = []

        async def send_tracking(message: Any) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(message["status"])
            await send(message)

        refusal = self._refusal(scope, path)
        try:
            if refusal is not None:
                await refusal(scope, receive, send_tracking)
            else:
                await self.app(scope, receive, send_tracking)
        finally:
            status = status_seen[0] if status_seen else 500
            self.state.metrics.requests.labels(endpoint, str(status)).inc()

    def _refusal(self, scope: Any, path: str) -> Callable[..., Awaitable[None]] | None:
        if self.state.fault is not None:
            return _error_app(self.state.fault, path)
        if self.state.draining:
            return _error_app(ServiceUnavailableError("The server is shutting down.",
                                                      code="shutting_down"), path)
        if path.startswith("/v1/") or path == "/metrics":
            problem = self.gate.check(scope)
            if problem is not None:
                return _error_app(problem, path)
        return None


def shaped(path: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    """The error body in the wire format of the endpoint at ``path`` (Anthropic's or OpenAI's)."""
    return anthropic_body(status, body) if path.startswith("/v1/messages") else body


def _error_app(exc: Exception, path: str) -> Callable[..., Awaitable[None]]:
    status, body = to_status_and_body(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(shaped(path, status, body), status_code=status, headers=headers)


#: Paths counted under their own name in the request metrics.
_LABELLED = ("/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions",
             "/v1/embeddings", "/v1/ps",
             "/v1/responses", "/v1/messages", "/v1/messages/count_tokens")


def _endpoint_label(path: str) -> str:
    if path.startswith("/v1/models/"):
        action = path.rsplit("/", 1)[-1]
        return "/v1/models/{id}" + (f"/{action}" if action in ("load", "unload") else "")
    if path.startswith("/v1/responses/"):
        return "/v1/responses/{id}"
    if path in _LABELLED:
        return path
    return "other"
