"""Human text for ``--version``."""

from __future__ import annotations

from typing import Any

from mlxk2.output.format import human_size
from mlxk2.output.sink import Output


def render_version(data: dict[str, Any], out: Output) -> str:
    text = f"mlxk2 {data['cli_version']} (JSON API {data['json_api_spec_version']})"
    if data["system"]:
        text += f"\nMemory: {human_size(data['system']['memory_total_bytes'])}"
    return text
