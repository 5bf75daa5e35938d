"""Human text for ps, load and unload."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from mlxk2.output.format import human_size, parse_iso_utc, table
from mlxk2.output.sink import Output


def _duration(seconds: float) -> str:
    for span, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= span:
            return f"{seconds / span:.0f}{unit}"
    return f"{seconds:.0f}s"


def unloads_str(model: dict[str, Any], now: datetime | None = None) -> str:
    """``in 4m``, ``never``, or ``5m after idle`` while requests use it."""
    keep = model["keep_alive_seconds"]
    if keep is None:
        return "never"
    if model["expires_at"] is None:
        return f"{_duration(keep)} after idle"
    now = now or datetime.now(timezone.utc)
    left = (parse_iso_utc(model["expires_at"]) - now).total_seconds()
    return f"in {_duration(max(0.0, left))}"


def render_ps(data: dict[str, Any], out: Output) -> str:
    if not data["models"]:
        return f"No models loaded on {data['server']}."
    rows = [[m["name"], human_size(m["memory_bytes"]), str(m["active_requests"]),
             str(m["queued_requests"]), unloads_str(m)] for m in data["models"]]
    return table(["NAME", "MEMORY", "ACTIVE", "QUEUED", "UNLOADS"], rows)


def render_load(data: dict[str, Any], out: Output) -> str:
    model = data["model"]
    return (f"Loaded {model['name']} ({human_size(model['memory_bytes'])}); "
            f"unloads {unloads_str(model)}.")


def render_unload(data: dict[str, Any], out: Output) -> str:
    if data["loaded"]:
        return f"{data['model']} unloads when its running requests end."
    if data["was_loaded"]:
        return f"Unloaded {data['model']}."
    return f"{data['model']} was not loaded."
