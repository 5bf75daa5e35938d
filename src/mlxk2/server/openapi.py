"""The published ``/openapi.json``: request bodies and answers the handlers really use.

Generating handlers read the raw body themselves (:func:`mlxk2.server._requests.read_body`
gives exact 400s naming the field), so FastAPI cannot see their body models. Each
route declares them instead: :func:`json_body` for the request, :func:`answers`
for the responses; :func:`install_openapi` moves the request models into the
document's shared components. The response models below describe the JSON the
endpoints build; they validate nothing at run time.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel

#: Where an OpenAPI document keeps shared schemas; request models are referenced there.
_COMPONENTS = "#/components/schemas/"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error body, used for every 4xx and 5xx."""

    error: ErrorDetail


class PromptTokensDetails(BaseModel):
    cached_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCallItem(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallItem] | None = None


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(TokenLogprob):
    top_logprobs: list[TokenLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob]


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: Literal["stop", "length", "tool_calls"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class TextLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class TextChoice(BaseModel):
    index: int
    text: str
    logprobs: TextLogprobs | None
    finish_reason: Literal["stop", "length"]


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[TextChoice]
    usage: Usage


class ModelCard(BaseModel):
    """A ``/v1/models`` item: OpenAI's fields, then the lifecycle extension fields."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    capabilities: list[str]
    context_length: int | None
    size_bytes: int
    loaded: bool
    memory_bytes: int | None = None
    active_requests: int | None = None
    queued_requests: int | None = None
    keep_alive_seconds: float | None = None
    expires_at: str | None = None


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class UnloadResult(BaseModel):
    id: str
    object: Literal["model"]
    was_loaded: bool
    loaded: bool


class LoadedModelStatus(BaseModel):
    name: str
    active_requests: int
    idle_seconds: float
    cpu_dtype: dict[str, Any] | None = None


class Health(BaseModel):
    status: Literal["ok", "shutting_down"]
    version: str
    models: list[LoadedModelStatus]
    loaded_models: list[str]
    uptime_seconds: float
    rss_bytes: int | None
    blas: dict[str, Any] | None = None
    distributed: dict[str, Any] | None = None


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    """Anthropic's error body, which the Messages endpoints answer with."""

    type: Literal["error"]
    error: AnthropicErrorDetail


#: Statuses any request may get, whatever the route: auth, origin, body, capacity.
_COMMON_ERRORS = (400, 401, 403, 413, 415, 503)


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads ``model`` from a JSON body itself."""
    return {"requestBody": {"required": required, "content": {"application/json": {
        "schema": model.model_json_schema(ref_template=_COMPONENTS + "{model}")}}}}


def answers(model: type[BaseModel] | None, *, streams: bool = False,
            media_type: str | None = None, errors: tuple[int, ...] = (),
            error_model: type[BaseModel] = ErrorResponse) -> dict[int | str, Any]:
    """``responses`` for a route: its 200 (JSON ``model``, an SSE stream as well when
    ``streams``, or plain ``media_type`` text) and its error statuses, in
    ``error_model``'s shape."""
    ok: dict[str, Any] = {"description": "Success"}
    if model is not None:
        ok["model"] = model
    content: dict[str, Any] = {}
    if streams:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    if media_type is not None:
        content[media_type] = {"schema": {"type": "string"}}
    if content:
        ok["content"] = content
    documented: dict[int | str, Any] = {200: ok}
    for status in sorted({*_COMMON_ERRORS, *errors}):
        documented[status] = {"model": error_model, "description": "Error body"}
    return documented


def install_openapi(app: FastAPI) -> None:
    """Build ``app``'s document once, with each route's request model among the components."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                              description=app.description)
            _share_request_models(doc)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def _share_request_models(doc: dict[str, Any]) -> None:
    """Move inline request schemas and their ``$defs`` into ``components``."""
    shared: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            media = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if not media or "$ref" in media["schema"]:
                continue
            schema = dict(media["schema"])
            shared.update(schema.pop("$defs", {}))
            shared[schema["title"]] = schema
            media["schema"] = {"$ref": _COMPONENTS + schema["title"]}
