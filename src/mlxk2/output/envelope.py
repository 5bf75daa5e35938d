"""The one place that builds the spec's ``{status, command, data, error}`` document."""

from __future__ import annotations

import json
import re
from typing import Any

from mlxk2.errors import MlxkError


def success_envelope(command: str, data: dict[str, Any] | None) -> dict[str, Any]:
    return {"status": "success", "command": command, "data": data, "error": None}


def error_envelope(command: str, err: MlxkError) -> dict[str, Any]:
    error: dict[str, Any] = {"type": err.error_type, "message": err.message}
    error.update(err.details)
    return {"status": "error", "command": command, "data": err.data, "error": error}


# json escapes C0 controls itself; DEL and C1 controls are escaped here too, so model
# text in an envelope can never drive a terminal that shows the raw JSON.
_UNSAFE = re.compile("[\x7f-\x9f]")


def dumps(document: dict[str, Any]) -> str:
    """Serialise one envelope; other non-ASCII stays readable for jq users."""
    text = json.dumps(document, indent=2, ensure_ascii=False)
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
