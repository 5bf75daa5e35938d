"""Human text for ``import``."""

from __future__ import annotations

from typing import Any

from mlxk2.output.format import human_size
from mlxk2.output.sink import Output
from mlxk2.resolve import is_workspace_spec


def render_import(data: dict[str, Any], out: Output) -> str:
    """What was imported, whether every value was kept, and how to run it."""
    types = ", ".join(f"{count} {name}" for name, count in data["tensor_types"].items())
    if data["lossless"]:
        values = "every weight value kept exactly"
    else:
        quant = data["quantization"] or {}
        values = (f"requantised by MLX to {quant.get('bits')} bits, "
                  f"group size {quant.get('group_size')} (not lossless)")
    target = data["target"]
    spec = target if is_workspace_spec(target) else f"./{target}"
    return (
        f"Imported {data['source']} -> {target} ({data['architecture']}).\n"
        f"Tensors: {types}; {values}.\n"
        f"{data['files_written']} files, {human_size(data['size_bytes'])}, {data['health']}.\n"
        f"Try: mlxk2 run {spec} \"Hello\""
    )
