"""Reading and checking request bodies; every problem is a 400 (or 413) naming the field."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from mlxk2.server._state import ServerState, state_of
from mlxk2.server.errors import BadRequestError, BodyTooLargeError, ContextLengthExceededError
from mlxk2.server.provider import LoadedEntry
from mlxk2.server.schemas import SamplingFields

if TYPE_CHECKING:
    from mlxk2.engine.generate import TokenBudget

M = TypeVar("M", bound=BaseModel)


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


async def read_body(request: Request, model: type[M]) -> M:
    """The body read within the server's size limit and validated as ``model``."""
    return parse_body(model, await read_json(request, state_of(request).config.max_body_bytes))


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


def check_logit_bias(req: SamplingFields, vocab_size: int) -> None:
    for key in (req.logit_bias or {}):
        if not key.lstrip("-").isdigit() or not 0 <= int(key) < vocab_size:
            raise BadRequestError(f"logit_bias key {key!r} is not a token id.",
                                  param="logit_bias")


def token_budget(state: ServerState, entry: LoadedEntry, prompt_len: int,
                 requested: int | None) -> TokenBudget:
    """The request's token limit: what it asked for, within the server's cap and the context.

    ``clamped`` is set when the limit is below what the client asked for.
    """
    from mlxk2.engine.generate import TokenBudget, plan_max_tokens

    context = entry.loaded.context_length
    if context is not None and prompt_len >= context:
        raise ContextLengthExceededError(
            f"The prompt has {prompt_len} tokens; the model's context holds {context}, "
            "leaving no room for a reply.")
    cap = state.config.max_tokens
    allowed = requested
    if cap is not None:
        allowed = cap if requested is None else min(requested, cap)
    used = plan_max_tokens(entry.loaded.context_length, prompt_len, allowed).max_tokens
    return TokenBudget(used, requested, requested is not None and used < requested)
