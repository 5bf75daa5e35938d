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
