"""Human text for ``pull``."""

from __future__ import annotations

from typing import Any

from mlxk2.output.format import paint
from mlxk2.output.sink import Output


def render_pull(data: dict[str, Any], out: Output) -> str:
    fresh = data["download_status"] == "success"
    mark = paint("✓", "green", out.color) if fresh else paint("•", "dim", out.color)
    return f"{mark} {data['message']}"
