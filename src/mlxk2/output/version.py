"""Human text for ``--version``."""

from __future__ import annotations

from typing import Any

from mlxk2.output.format import human_size
from mlxk2.output.sink import Output


def blas_text(blas: dict[str, Any]) -> str:
    """``openblas 0.3.34 (verified, 2 threads)`` or ``stock (turned off by MLXK2_BLAS=0)``."""
    name = blas["backend"] + (f" {blas['version']}" if blas["backend"] == "openblas" else "")
    notes = []
    if blas["backend"] == "openblas":
        notes.append("verified" if blas["verified"] else "not yet verified")
    if blas.get("threads"):
        notes.append(f"{blas['threads']} threads")
    if blas.get("reason"):
        notes.append(blas["reason"])
    return f"{name} ({', '.join(notes)})" if notes else name


def distributed_text(facts: dict[str, Any]) -> str:
    """``rank 0 of 2 (ring)`` under mlx.launch, else the backends it could start here."""
    launch = facts.get("launch")
    if launch is not None:
        size = launch["world_size"] if launch["world_size"] is not None else "?"
        return f"rank {launch['rank']} of {size} ({launch['backend']})"
    if facts.get("launcher") is None:
        return "unavailable (no mlx.launch)"
    return f"mlx.launch with {', '.join(facts['backends']) or 'no backend'}"


def render_version(data: dict[str, Any], out: Output) -> str:
    text = f"mlxk2 {data['cli_version']} (JSON API {data['json_api_spec_version']})"
    system = data["system"] or {}
    if "memory_total_bytes" in system:
        text += f"\nMemory: {human_size(system['memory_total_bytes'])}"
    if "blas" in system:
        text += f"\nBLAS: {blas_text(system['blas'])}"
    if "distributed" in system:
        text += f"\nDistributed: {distributed_text(system['distributed'])}"
    return text
