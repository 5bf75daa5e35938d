"""OpenAI-shaped errors: HTTP status and body for any exception.

Library errors carry their status and OpenAI code on their class (:mod:`mlxk2.errors`);
the server's own are declared here. Handlers raise; nothing else picks a status code.
A 500 carries a fixed message so that paths and tracebacks stay in the server log.
"""

from __future__ import annotations

from typing import Any

from mlxk2.errors import MlxkError


class ApiError(Exception):
    """An error with a chosen HTTP status and OpenAI ``error`` fields."""

    status: int = 400
    kind: str = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class BadRequestError(ApiError):
    """Malformed JSON, a wrongly typed field, or a value the engine cannot honour."""


class ContextLengthExceededError(BadRequestError):
    """The prompt leaves no room for a reply in the model's context (never truncated)."""

    code = "context_length_exceeded"


class NotFoundError(ApiError):
    """A stored object (a response by id) that does not exist, or no longer does."""

    status = 404
    code = "not_found"


class AuthenticationError(ApiError):
    status = 401
    kind = "authentication_error"
    code = "invalid_api_key"


class BodyTooLargeError(ApiError):
    status = 413
    code = "request_too_large"


class ServiceUnavailableError(ApiError):
    """The queue is full or the server is shutting down; the client may retry later."""

    status = 503
    kind = "server_error"
    code = "server_overloaded"


INTERNAL_MESSAGE = "The server failed to process the request."


def error_body(message: str, kind: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """The body OpenAI clients parse: ``{"error": {message, type, param, code}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


#: Anthropic's ``error.type`` for each HTTP status it documents.
_ANTHROPIC_KINDS = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}


def anthropic_body(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI error body in Anthropic's shape.

    That is ``{"type": "error", "error": {"type": ..., "message": ...}}``.
    """
    kind = _ANTHROPIC_KINDS.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": body["error"]["message"]}}


def to_status_and_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """Map any exception to its HTTP status and OpenAI error body.

    Unknown exceptions become a 500 whose message reveals nothing about the host.
    """
    if isinstance(exc, ApiError):
        return exc.status, error_body(exc.message, exc.kind, exc.param, exc.code)
    if isinstance(exc, MlxkError) and exc.openai_code is not None:
        return exc.http_status, error_body(exc.message or str(exc), exc.openai_type, None,
                                           exc.openai_code)
    return 500, error_body(INTERNAL_MESSAGE, "server_error", None, "internal_error")
