"""The FastAPI app factory: OpenAI-compatible routes over the provider and scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mlxk2 import __version__
from mlxk2.errors import MlxkError
from mlxk2.server.auth import ApiKeyGate
from mlxk2.server.config import ServerConfig
from mlxk2.server.errors import (
    ApiError,
    BadRequestError,
    BodyTooLargeError,
    ServiceUnavailableError,
    error_body,
    to_status_and_body,
)
from mlxk2.server.memory import rss_bytes
from mlxk2.server.metrics import Metrics
from mlxk2.server.provider import LoadedEntry, ModelProvider
from mlxk2.server.scheduler import (
    Aborted,
    Delta,
    Event,
    Finished,
    GenerationRequest,
    Mailbox,
)
from mlxk2.server.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields

log = logging.getLogger("mlxk2.server")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Admission:
    """At most ``slots`` requests generate at once; at most ``max_queue`` wait."""

    def __init__(self, slots: int, max_queue: int, metrics: Metrics) -> None:
        self._slots = asyncio.Semaphore(slots)
        self._max_queue = max_queue
        self._waiting = 0
        self._metrics = metrics

    async def enter(self) -> None:
        """Take a slot, waiting in the queue if needed.

        Raises:
            ServiceUnavailableError: The queue is full.
        """
        if self._slots.locked() and self._waiting >= self._max_queue:
            raise ServiceUnavailableError("The server is at capacity; retry shortly.",
                                          code="queue_full")
        self._waiting += 1
        self._metrics.queue_depth.set(self._waiting)
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
            self._metrics.queue_depth.set(self._waiting)
        self._metrics.active_requests.inc()

    def leave(self) -> None:
        self._slots.release()
        self._metrics.active_requests.dec()


@dataclass
class ServerState:
    """Everything a handler needs, hung on ``app.state.mlxk``."""

    config: ServerConfig
    provider: ModelProvider
    metrics: Metrics
    admission: Admission
    draining: bool = False
    started: float = field(default_factory=time.time)

    def begin_shutdown(self) -> None:
        """Refuse new work and end running streams with an error event."""
        if not self.draining:
            self.draining = True
            self.provider.worker.abort_all(
                ServiceUnavailableError("The server is shutting down.", code="shutting_down")
            )


def _state(request: Request) -> ServerState:
    return request.app.state.mlxk


# -- request parsing -------------------------------------------------------------------


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refusing oversized bodies before reading them whole.

    Raises:
        BodyTooLargeError: More than ``limit`` bytes.
        BadRequestError: Not valid JSON.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"Request body exceeds {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"Request body exceeds {limit} bytes.")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"Malformed JSON body: {exc}") from exc


M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], body: Any) -> M:
    """Validate ``body``; the first problem becomes a 400 naming the field."""
    if not isinstance(body, dict):
        raise BadRequestError("The request body must be a JSON object.")
    try:
        return model.model_validate(body)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise BadRequestError(f"Invalid field '{param}': {first['msg']}", param=param) from exc


def sampling_params(req: SamplingFields) -> Any:
    """The engine's sampling settings for a request (temperature 0 when omitted)."""
    from mlxk2.engine.sampling import SamplingParams

    bias: dict[int, float] | None = None
    if req.logit_bias:
        try:
            bias = {int(k): v for k, v in req.logit_bias.items()}
        except ValueError as exc:
            raise BadRequestError("logit_bias keys must be token ids.",
                                  param="logit_bias") from exc
    return SamplingParams(
        temperature=0.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        min_p=req.min_p or 0.0,
        repetition_penalty=req.repetition_penalty,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        logit_bias=bias,
        seed=req.seed,
    )


def _check_logit_bias(req: SamplingFields, vocab_size: int) -> None:
    for key in (req.logit_bias or {}):
        if not key.lstrip("-").isdigit() or not 0 <= int(key) < vocab_size:
            raise BadRequestError(f"logit_bias key {key!r} is not a token id.",
                                  param="logit_bias")


def _token_budget(state: ServerState, entry: LoadedEntry, prompt_len: int,
                  requested: int | None) -> int:
    from mlxk2.engine.generate import plan_max_tokens

    cap = state.config.max_tokens
    if cap is not None:
        requested = cap if requested is None else min(requested, cap)
    return plan_max_tokens(entry.loaded.context_length, prompt_len, requested).max_tokens


# -- the generation round trip -----------------------------------------------------------


def _mergeable(first: Delta, second: Delta) -> bool:
    """Two deltas can share a chunk unless that would reorder reasoning and content."""
    return not (first.content and second.reasoning)


class _Run:
    """One admitted request: its lease on a model, its slot, and its event queue."""

    def __init__(self, state: ServerState, entry: LoadedEntry, gen: GenerationRequest) -> None:
        self.state = state
        self.entry = entry
        self.mailbox = Mailbox()
        self.events = self.mailbox.queue
        self.started = time.perf_counter()
        self.first_event: float | None = None
        worker = state.provider.worker
        self.ticket = worker.submit(entry.batch, gen, self.mailbox)
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[Event]:
        """Events in order; text that piled up while the client was slow comes merged."""
        pending: Event | None = None
        while True:
            event = pending or await self.events.get()
            pending = None
            while isinstance(event, Delta) and not self.events.empty():
                following = self.events.get_nowait()
                if isinstance(following, Delta) and _mergeable(event, following):
                    event = Delta(event.content + following.content,
                                  event.reasoning + following.reasoning)
                else:
                    pending = following
                    break
            if self.first_event is None:
                self.first_event = time.perf_counter()
                self.state.metrics.ttft.observe(self.first_event - self.started)
            if isinstance(event, Finished):
                self._record(event)
            yield event
            if not isinstance(event, Delta):
                return

    def _record(self, done: Finished) -> None:
        metrics = self.state.metrics
        metrics.prompt_tokens.inc(done.prompt_tokens)
        metrics.generated_tokens.inc(done.completion_tokens)
        if done.decode_seconds > 0 and done.completion_tokens > 1:
            metrics.tokens_per_second.observe((done.completion_tokens - 1) / done.decode_seconds)

    def close(self) -> None:
        """Free the batch slot, the admission slot and the model lease (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.state.provider.worker.cancel(self.ticket)
        self.state.admission.leave()
        self.state.provider.release(self.entry)


async def _start(state: ServerState, req: SamplingFields,
                 prompt_for: Callable[[LoadedEntry], tuple[list[int], bool | None]]) -> _Run:
    """Load the model, build the prompt, wait for a slot and submit the request.

    ``prompt_for`` returns the prompt tokens and where reasoning stands: None to
    leave the text unsplit (raw completions), else whether the prompt already
    opened a reasoning block.
    """
    if req.n != 1:
        raise BadRequestError("Only n=1 is supported.", param="n")
    model = req.model or state.config.model
    if not model:
        raise BadRequestError("No model given and the server has no default model.",
                              param="model")
    entry = await state.provider.acquire(model)
    try:
        if req.logit_bias:
            _check_logit_bias(req, len(entry.loaded.tokenizer))
        prompt, in_reasoning = prompt_for(entry)
        if not prompt:
            raise BadRequestError("The prompt is empty.", param="prompt")
        gen = GenerationRequest(
            prompt_tokens=prompt,
            max_tokens=_token_budget(state, entry, len(prompt), req.token_limit()),
            sampling=sampling_params(req),
            stops=req.stop_strings(),
            split_reasoning=in_reasoning is not None,
            start_in_reasoning=bool(in_reasoning),
        )
        await state.admission.enter()
    except BaseException:
        state.provider.release(entry)
        raise
    try:
        if state.draining:
            raise ServiceUnavailableError("The server is shutting down.", code="shutting_down")
        return _Run(state, entry, gen)
    except BaseException:
        state.admission.leave()
        state.provider.release(entry)
        raise


async def _gather(run: _Run) -> tuple[str, str, Finished]:
    content: list[str] = []
    reasoning: list[str] = []
    async for event in run:
        if isinstance(event, Delta):
            content.append(event.content)
            reasoning.append(event.reasoning)
        elif isinstance(event, Aborted):
            raise event.error
        else:
            return "".join(content), "".join(reasoning), event
    raise RuntimeError("generation ended without a final event")


class ClientGoneError(Exception):
    """The client of a non-streaming request disconnected before the answer was ready."""


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _collect(run: _Run, request: Request) -> tuple[str, str, Finished]:
    """The whole answer, or :class:`ClientGoneError` as soon as the client hangs up.

    The run is closed either way, so a vanished client frees its slot at once.
    """
    answer = asyncio.ensure_future(_gather(run))
    watch = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({answer, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not answer.done():
            answer.cancel()
        run.close()
    if answer.done() and not answer.cancelled():
        return answer.result()
    run.state.metrics.disconnects.inc()
    log.info("client disconnected before its answer; freed its batch slot")
    raise ClientGoneError


def _usage(done: Finished) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def _sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


class _EventStream(StreamingResponse):
    """An SSE response that always closes its generator, so a disconnect frees the slot."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except (ClientDisconnect, OSError):
            log.info("client disconnected mid-stream")
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


async def _stream_events(run: _Run, head: Callable[[], dict[str, Any]],
                         piece: Callable[[Delta], dict[str, Any] | None],
                         tail: Callable[[Finished], dict[str, Any]],
                         include_usage: bool) -> AsyncIterator[str]:
    """SSE lines for one run; ``head``/``piece``/``tail`` shape the chunks per endpoint."""
    finished = False
    try:
        first = head()
        if first:
            yield _sse(first)
        async for event in run:
            if isinstance(event, Delta):
                chunk = piece(event)
                if chunk is not None:
                    yield _sse(chunk)
            elif isinstance(event, Finished):
                yield _sse(tail(event))
                if include_usage:
                    yield _sse({**tail(event), "choices": [], "usage": _usage(event)})
            else:
                _, body = to_status_and_body(event.error)
                yield _sse(body)
        finished = True
        yield _sse("[DONE]")
    finally:
        if not finished:
            run.state.metrics.disconnects.inc()
            log.info("stream ended early; freeing its batch slot")
        run.close()


# -- the app ----------------------------------------------------------------------------------


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


def _endpoint_label(path: str) -> str:
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    if path in ("/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions"):
        return path
    return "other"


def _add_routes(app: FastAPI) -> None:
    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        state = _state(request)
        return {
            "status": "shutting_down" if state.draining else "ok",
            "version": __version__,
            "models": state.provider.describe(),
            "loaded_models": state.provider.loaded_names(),
            "uptime_seconds": round(time.time() - state.started, 3),
            "rss_bytes": rss_bytes(),
        }

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        state = _state(request)
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        entries = await asyncio.to_thread(_runnable_models, _state(request))
        return {"object": "list", "data": entries}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        for entry in await asyncio.to_thread(_runnable_models, _state(request)):
            if entry["id"] == model_id:
                return entry
        from mlxk2.errors import ModelNotFoundError

        raise ModelNotFoundError(f"The model '{model_id}' does not exist.")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        state = _state(request)
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

        run = await _start(state, req, prompt_for)
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        name = run.entry.name
        if req.stream:
            return _EventStream(
                _chat_stream(run, ident, created, name, req.include_usage()),
                media_type="text/event-stream", headers=SSE_HEADERS,
            )
        content, reasoning, done = await _collect(run, request)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning:
            message["reasoning_content"] = reasoning
        return JSONResponse({
            "id": ident, "object": "chat.completion", "created": created, "model": name,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": done.finish_reason}],
            "usage": _usage(done),
        })

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        state = _state(request)
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

        run = await _start(state, req, prompt_for)
        ident = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        name = run.entry.name
        if req.stream:
            return _EventStream(
                _text_stream(run, ident, created, name, req.include_usage()),
                media_type="text/event-stream", headers=SSE_HEADERS,
            )
        content, _, done = await _collect(run, request)
        return JSONResponse({
            "id": ident, "object": "text_completion", "created": created, "model": name,
            "choices": [{"index": 0, "text": content, "logprobs": None,
                         "finish_reason": done.finish_reason}],
            "usage": _usage(done),
        })


def _chat_stream(run: _Run, ident: str, created: int, model: str,
                 include_usage: bool) -> AsyncIterator[str]:
    base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}], **extra}

    def piece(event: Delta) -> dict[str, Any] | None:
        delta: dict[str, Any] = {}
        if event.reasoning:
            delta["reasoning_content"] = event.reasoning
        if event.content:
            delta["content"] = event.content
        return chunk(delta) if delta else None

    return _stream_events(
        run,
        head=lambda: chunk({"role": "assistant", "content": ""}),
        piece=piece,
        tail=lambda done: chunk({}, done.finish_reason),
        include_usage=include_usage,
    )


def _text_stream(run: _Run, ident: str, created: int, model: str,
                 include_usage: bool) -> AsyncIterator[str]:
    base = {"id": ident, "object": "text_completion", "created": created, "model": model}
    extra = {"usage": None} if include_usage else {}

    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "text": text, "logprobs": None,
                                     "finish_reason": finish}], **extra}

    return _stream_events(
        run,
        head=dict,
        piece=lambda event: chunk(event.content) if event.content else None,
        tail=lambda done: chunk("", done.finish_reason),
        include_usage=include_usage,
    )


def _runnable_models(state: ServerState) -> list[dict[str, Any]]:
    return [
        {"id": name, "object": "model", "created": int(modified),
         "owned_by": name.split("/", 1)[0] if "/" in name and not name.startswith(("/", ".", "~"))
         else "local"}
        for name, modified in state.provider.list_runnable()
    ]
