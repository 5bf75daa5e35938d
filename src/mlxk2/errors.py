"""Typed errors raised by the library.

Every spec ``error.type`` string is declared exactly once, on its class, together
with the exit code the CLI uses for it. The CLI turns any :class:`MlxkError`
into the JSON envelope or a one-line stderr message; nothing else needs to know
the strings.

Exit codes (spec "Exit Codes"): 0 success, 1 validation / not found / ambiguous,
2 network or download, 3 permission or filesystem.

The server answers with the class's ``http_status`` and OpenAI ``error.type`` /
``error.code`` (``openai_type``, ``openai_code``); a class without an
``openai_code`` is a 500 whose message stays in the server log.
"""

from __future__ import annotations

from typing import Any


class MlxkError(Exception):
    """Base class: a failure the user can act on, with its spec error type."""

    error_type: str = "InternalError"
    exit_code: int = 1
    http_status: int = 500
    openai_type: str = "server_error"
    openai_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        data: dict[str, Any] | None = None,
        **details: Any,
    ) -> None:
        """Args:
        message: One human sentence, also used as ``error.message``.
        data: Partial command data the spec shows alongside this error.
        details: Extra ``error`` fields such as ``matches`` or ``available_hashes``.
        """
        super().__init__(message)
        self.message = message
        self.data = data
        self.details = details


class ValidationError(MlxkError, ValueError):
    error_type = "ValidationError"
    http_status = 400
    openai_type = "invalid_request_error"
    openai_code = "invalid_value"


class ModelNotFoundError(MlxkError, LookupError):
    error_type = "model_not_found"
    http_status = 404
    openai_type = "invalid_request_error"
    openai_code = "model_not_found"


class AmbiguousMatchError(MlxkError, LookupError):
    error_type = "ambiguous_match"
    http_status = 400
    openai_type = "invalid_request_error"
    openai_code = "ambiguous_model"


class ModelUnhealthyError(MlxkError):
    """The model's files fail the integrity check, so it cannot be run."""

    error_type = "model_unhealthy"
    http_status = 400
    openai_type = "invalid_request_error"
    openai_code = "model_unhealthy"


class ModelIncompatibleError(MlxkError):
    """Healthy files that mlx-lm cannot run for this command (GGUF, embedding, ...)."""

    error_type = "model_incompatible"
    http_status = 400
    openai_type = "invalid_request_error"
    openai_code = "model_incompatible"


class ModelTooLargeError(ModelIncompatibleError, MemoryError):
    """The model's weights exceed the memory available to load them.

    It is a ``model_incompatible`` error for the CLI (the model cannot run on this
    machine now) and a 507 for HTTP clients.
    """

    http_status = 507
    openai_type = "insufficient_storage"
    openai_code = "model_too_large"


class LocksPresentError(MlxkError):
    error_type = "locks_present"


class AuthError(MlxkError):
    error_type = "auth_error"


class DownloadFailedError(MlxkError):
    error_type = "download_failed"
    exit_code = 2


class CloneFailedError(MlxkError):
    error_type = "clone_failed"
    exit_code = 2


class PushFailedError(MlxkError):
    error_type = "push_failed"
    exit_code = 2


class AccessDeniedError(MlxkError):
    error_type = "access_denied"
    exit_code = 2


class NetworkError(MlxkError, ConnectionError):
    error_type = "NetworkError"
    exit_code = 2


class PermissionDeniedError(MlxkError, PermissionError):
    error_type = "PermissionError"
    exit_code = 3


class FilesystemError(MlxkError, OSError):
    error_type = "FilesystemError"
    exit_code = 3


class OperationError(MlxkError, OSError):
    error_type = "OperationError"
    exit_code = 3


class InterruptedByUserError(MlxkError):
    """Ctrl-C stopped the operation; 130 is the exit code shells expect after SIGINT."""

    error_type = "interrupted"
    exit_code = 130


class InternalError(MlxkError):
    error_type = "InternalError"
    exit_code = 1



class RankLostError(OperationError):
    """A rank of a distributed run died or stopped answering; the run cannot go on."""

    http_status = 503
    openai_type = "server_error"
    openai_code = "rank_lost"
