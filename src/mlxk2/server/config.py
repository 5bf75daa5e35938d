"""Settings for one server process, parsed once by the ``serve`` command."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from mlxk2.errors import ValidationError

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: A keep-alive this long (a century) or longer means never: no later time can be shown.
NEVER_AFTER_SECONDS = 100 * 365 * 86400.0


def parse_duration(text: str) -> float | None:
    """Seconds for ``"90"``, ``"30s"``, ``"5m"``, ``"1h"``; ``None`` means never.

    A negative value, a century or more, ``"never"`` or ``"inf"`` keeps models loaded
    for ever; ``"0"`` unloads a model as soon as its last request finishes.

    Raises:
        ValidationError: For text that is not a duration.
    """
    if text.strip().lower() in ("never", "inf", "forever"):
        return None
    match = _DURATION.match(text)
    if match is None:
        raise ValidationError(f"Invalid duration {text!r}: use e.g. 30s, 5m, 1h or never")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    return None if seconds < 0 or seconds >= NEVER_AFTER_SECONDS else seconds


def keep_alive_seconds(value: str | float) -> float:
    """A client's ``keep_alive`` (as Ollama takes it) in seconds, ``math.inf`` for never.

    Numbers are seconds and strings durations (``"30m"``); negative, or a century
    and more, keeps the model loaded for ever, 0 unloads it once the request ends.

    Raises:
        ValidationError: For a boolean, NaN or text that is not a duration.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (
            isinstance(value, float) and math.isnan(value)):
        raise ValidationError("keep_alive must be a duration like 30s, 5m, or seconds")
    if isinstance(value, (int, float)):
        seconds: float | None = None if value < 0 else min(value, NEVER_AFTER_SECONDS)
    else:
        seconds = parse_duration(value)
    if seconds is None or seconds >= NEVER_AFTER_SECONDS:
        return math.inf
    return float(seconds)


@dataclass(frozen=True)
class ServerConfig:
    """Everything the app factory needs; no environment is read after this is built.

    Attributes:
        host: Interface to bind; loopback unless the user asks otherwise.
        port: TCP port.
        model: Model to preload and to use when a request names none.
        max_tokens: Server-wide cap on generated tokens per request (None: context size).
        api_key: Bearer token required on ``/v1/*`` and ``/metrics`` when set.
        cors_origins: Allowed CORS origins; empty disables CORS entirely.
        keep_alive: Idle seconds before a model is unloaded; None keeps it.
        max_loaded_models: Models kept in memory at once, least recently used evicted.
        max_concurrency: Sequences decoded together in one batch.
        max_queue: Requests allowed to wait for a batch slot before 503.
        prompt_cache: Finished requests per model whose KV cache is kept for
            later prompts that begin the same way; 0 turns the cache off.
        max_n: Most choices (``n``) one request may ask for; each is a batch row.
        responses_store: Stored Responses API answers kept (least recently used
            dropped first) for ``previous_response_id`` and ``GET /v1/responses/{id}``.
        max_body_bytes: Largest accepted request body (413 beyond).
        log_level: Python logging level name.
        log_json: One JSON object per log line.
        shutdown_grace: Seconds running requests may take to finish after SIGINT or
            SIGTERM before they are aborted; None waits for them however long.
        cpu_dtype: The CPU dtype policy for loaded models (:mod:`mlxk2.engine.dtype`).
        threads: OpenBLAS threads (None: the usable CPUs).
        ui: Serve the chat page at ``/``.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None
    max_tokens: int | None = None
    api_key: str | None = None
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    keep_alive: float | None = 300.0
    max_loaded_models: int = 1
    max_concurrency: int = 8
    max_queue: int = 64
    prompt_cache: int = 16
    responses_store: int = 256
    max_n: int = 8
    max_body_bytes: int = 4 * 1024 * 1024
    log_level: str = "info"
    log_json: bool = False
    shutdown_grace: float | None = 10.0
    cpu_dtype: str = "native"
    threads: int | None = None
    ui: bool = True
