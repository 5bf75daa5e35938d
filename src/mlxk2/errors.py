"""Typed errors raised by the library.

Every spec ``error.type`` string is declared exactly once, on its class, together
with the exit code the CLI uses for it. The CLI turns any :class:`MlxkError`
into the JSON envelope or a one-line stderr message; nothing else needs to know
the strings.

Exit codes (spec "Exit Codes"): 0 success, 1 validation / not found / ambiguous,
2 network or download, 3 permission or filesystem.
"""

from __future__ import annotations

from typing import Any


class MlxkError(Exception):
    """Base class: a failure the user can act on, with its spec error type."""

    error_type: str = "InternalError"
    exit_code: int = 1

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


class ModelNotFoundError(MlxkError, LookupError):
    error_type = "model_not_found"


class AmbiguousMatchError(MlxkError, LookupError):
    error_type = "ambiguous_match"


class ModelUnhealthyError(MlxkError):
    """The model's files fail the integrity check, so it cannot be run."""

    error_type = "model_unhealthy"


class ModelIncompatibleError(MlxkError):
    """Healthy files that mlx-lm cannot run for this command (GGUF, embedding, ...)."""

    error_type = "model_incompatible"


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


class GenerationFailedError(InternalError, RuntimeError):
    """Generation of one request failed inside the engine; ``stage`` says where.

    ``stage`` is ``"sampling"``, ``"logits_processor"`` or ``"detokenizing"`` when
    the request's own row failed (the rest of its batch went on), or ``"model"``
    when the model step shared by the whole batch failed.
    """

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(message)
        self.stage = stage

