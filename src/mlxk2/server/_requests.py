"""Reading and checking request bodies; every problem is a 400 (or 413) naming the field."""

from __future__ import annotations

import json
import math
import re
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

#: A ``\\uD800``..``\\uDFFF`` escape: the only way a JSON body can carry a surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
#: A token id as OpenAI's ``logit_bias`` keys spell it: ASCII digits only.
_TOKEN_ID = re.compile(r"[0-9]{1,12}")


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
    raw = b"".join(chunks)
    try:
        body = json.loads(raw, parse_constant=_not_json_constant, parse_float=_finite_float)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"Malformed JSON body: {exc}") from exc
    except RecursionError as exc:
        raise BadRequestError("Malformed JSON body: nested too deeply.") from exc
    except ValueError as exc:  # an integer of more digits than int() converts
        raise BadRequestError(f"Malformed JSON body: a number is too long ({exc}).") from exc
    if _SURROGATE_ESCAPE.search(raw):
        _refuse_lone_surrogates(body)
    return body


def _not_json_constant(name: str) -> Any:
    """``NaN`` and ``Infinity`` are no JSON, though Python's parser reads them."""
    raise BadRequestError(f"Malformed JSON body: {name} is not a JSON value.")


def _finite_float(text: str) -> float:
    """A JSON number as a float; one beyond float range (``1e400``) is a 400, not infinity,
    which no field accepts and which a response echoing the field could not encode."""
    value = float(text)
    if math.isinf(value):
        raise BadRequestError(f"Malformed JSON body: the number {text[:40]} is out of range.")
    return value


def _refuse_lone_surrogates(body: Any) -> None:
    """400 for a string holding half a surrogate pair, which is no Unicode text.

    Paired escapes (an emoji written as ``\\ud83d\\ude00``) decode to one character
    and pass; encoding the whole body once finds any lone half at C speed.
    """
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequestError("The body contains a lone UTF-16 surrogate escape "
                              "(such as \\ud800), which is not valid Unicode text.") from exc


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
        bias = {_token_id(k): v for k, v in req.logit_bias.items()}
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


def _token_id(key: str) -> int:
    """A ``logit_bias`` key as a token id; only ASCII digits qualify (``int()`` would
    also read ``"０"`` or ``"٣"``, and raise on ``"²"``)."""
    if _TOKEN_ID.fullmatch(key) is None:
        raise BadRequestError(f"logit_bias key {key!r} is not a token id.", param="logit_bias")
    return int(key)


def check_logit_bias(req: SamplingFields, vocab_size: int) -> None:
    """Every ``logit_bias`` key names a token of the loaded model's vocabulary."""
    for key in (req.logit_bias or {}):
        if not _token_id(key) < vocab_size:
            raise BadRequestError(f"logit_bias key {key!r} is not a token id.",
                                  param="logit_bias")


def check_prompt_size(entry: LoadedEntry, chars: int, param: str) -> None:
    """400 naming ``param`` for a prompt that cannot fit the context, before tokenising it."""
    from mlxk2.engine.generate import check_prompt_chars
    from mlxk2.errors import ValidationError

    try:
        check_prompt_chars(entry.loaded, chars)
    except ValidationError as exc:
        raise ContextLengthExceededError(exc.message, param=param) from exc


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
