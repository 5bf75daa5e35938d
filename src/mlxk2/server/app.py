"""The FastAPI app factory: OpenAI-compatible routes over the provider and scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlxk2 import __version__
from mlxk2.errors import MlxkError
from mlxk2.server._requests import parse_body, read_json
from mlxk2.server._runs import (
    ClientGoneError,
    EventStream,
    chat_stream,
    collect,
    start_run,
    text_stream,
    usage,
)
from mlxk2.server._state import Admission, ServerState, state_of
from mlxk2.server.auth import ApiKeyGate
from mlxk2.server.config import ServerConfig
from mlxk2.server.errors import (
    ApiError,
    BadRequestError,
    ServiceUnavailableError,
    error_body,
    to_status_and_body,
)
from mlxk2.server.memory import rss_bytes
from mlxk2.server.metrics import Metrics
from mlxk2.server.provider import LoadedEntry, ModelProvider
from mlxk2.server.schemas import ChatCompletionRequest, CompletionRequest

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
    _add_routes(app)
    app.add_middleware(_Gate, state=state, gate=ApiKeyGate(config.api_key))
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
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
        return JSONResponse(body, status_code=status)

    async def client_gone(request: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # nobody reads it; it labels the metrics

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)

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
        if self.state.draining:
            return _error_app(ServiceUnavailableError("The server is shutting down.",
                                                      code="shutting_down"))
        if path.startswith("/v1/") or path == "/metrics":
            problem = self.gate.check(scope)
            if problem is not None:
                return _error_app(problem)
        return None


def _error_app(exc: Exception) -> Callable[..., Awaitable[None]]:
    status, body = to_status_and_body(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _blas_state() -> dict[str, Any] | None:
    """This process's BLAS binding, once a model load has made it (None before)."""
    from mlxk2.engine.blas import blas_status

    status = blas_status()
    return None if status is None else status.to_dict()


def _endpoint_label(path: str) -> str:
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    if path in ("/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions"):
        return path
    return "other"


def _add_routes(app: FastAPI) -> None:
    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        state = state_of(request)
        return {
            "status": "shutting_down" if state.draining else "ok",
            "version": __version__,
            "models": state.provider.describe(),
            "loaded_models": state.provider.loaded_names(),
            "uptime_seconds": round(time.time() - state.started, 3),
            "rss_bytes": rss_bytes(),
            "blas": _blas_state(),
        }

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        state = state_of(request)
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        entries = await asyncio.to_thread(_runnable_models, state_of(request))
        return {"object": "list", "data": entries}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        """A model by id, or by any name a completion request accepts (``demo-chat``)."""
        from mlxk2.errors import MlxkError, ModelNotFoundError

        state = state_of(request)
        entries = {e["id"]: e for e in await asyncio.to_thread(_runnable_models, state)}
        if model_id not in entries:
            with contextlib.suppress(MlxkError):
                model_id = (await asyncio.to_thread(state.provider.runnable, model_id)).name
        if model_id in entries:
            return entries[model_id]
        raise ModelNotFoundError(f"The model '{model_id}' does not exist.")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        state = state_of(request)
        req = parse_body(ChatCompletionRequest, await read_json(request,
                                                                state.config.max_body_bytes))
        for i, message in enumerate(req.messages):
            part = message.non_text_part()
            if part is not None:
                raise BadRequestError(f"Content part type '{part}' is not supported.",
                                      param=f"messages.{i}.content")
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]

        def prompt_for(entry: LoadedEntry) -> tuple[list[int], bool | None]:
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

        run = await start_run(state, req, prompt_for)
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        name = run.entry.name
        if req.stream:
            return EventStream(run, chat_stream(run, ident, created, name,
                                                req.include_usage()))
        content, reasoning, done = await collect(run, request)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning:
            message["reasoning_content"] = reasoning
        return JSONResponse({
            "id": ident, "object": "chat.completion", "created": created, "model": name,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": done.finish_reason}],
            "usage": usage(done),
        })

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        state = state_of(request)
        req = parse_body(CompletionRequest, await read_json(request,
                                                            state.config.max_body_bytes))

        def prompt_for(entry: LoadedEntry) -> tuple[list[int], bool | None]:
            from mlxk2.engine.chat import raw_prompt_tokens

            prompt = req.prompt
            if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
                vocab = len(entry.loaded.tokenizer)
                if any(not 0 <= t < vocab for t in prompt):  # type: ignore[operator]
                    raise BadRequestError("Prompt token id out of range.", param="prompt")
                return list(prompt), None  # type: ignore[arg-type]
            if isinstance(prompt, list):
                if len(prompt) != 1:
                    raise BadRequestError("Only one prompt per request is supported.",
                                          param="prompt")
                prompt = prompt[0]
            return raw_prompt_tokens(entry.loaded.tokenizer, str(prompt)), None

        run = await start_run(state, req, prompt_for)
        ident = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        name = run.entry.name
        if req.stream:
            return EventStream(run, text_stream(run, ident, created, name,
                                                req.include_usage()))
        content, _, done = await collect(run, request)
        return JSONResponse({
            "id": ident, "object": "text_completion", "created": created, "model": name,
            "choices": [{"index": 0, "text": content, "logprobs": None,
                         "finish_reason": done.finish_reason}],
            "usage": usage(done),
        })


def _runnable_models(state: ServerState) -> list[dict[str, Any]]:
    return [
        {"id": name, "object": "model", "created": int(modified),
         "owned_by": name.split("/", 1)[0] if "/" in name and not name.startswith(("/", ".", "~"))
         else "local"}
        for name, modified in state.provider.list_runnable()
    ]
