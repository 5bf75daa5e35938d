"""The one place that builds the spec's ``{status, command, data, error}`` document."""

from __future__ import annotations

import json
from typing import Any

from mlxk2.errors import MlxkError


def success_envelope(command: str, data: dict[str, Any] | None) -> dict[str, Any]:
    return {"status": "success", "command": command, "data": data, "error": None}


def error_envelope(command: str, err: MlxkError) -> dict[str, Any]:
    error: dict[str, Any] = {"type": err.error_type, "message": err.message}
    error.update(err.details)
    return {"status": "error", "command": command, "data": err.data, "error": error}


def dumps(document: dict[str, Any]) -> str:
    """Serialise one envelope; non-ASCII stays readable for jq users."""
    return json.dumps(document, indent=2, ensure_ascii=False)
