"""Reading ``config.json`` tolerantly and pulling the facts commands need from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length",
                "max_seq_len", "seq_length", "n_ctx", "model_max_length")


def read_config(model_dir: Path) -> dict[str, Any] | None:
    """The parsed ``config.json``, or None when missing, unreadable or not an object."""
    try:
        data = json.loads((model_dir / "config.json").read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def config_value(config: dict[str, Any], *keys: str) -> Any:
    """First of ``keys`` found at the top level, else inside ``text_config``."""
    scopes = [config]
    nested = config.get("text_config")
    if isinstance(nested, dict):
        scopes.append(nested)
    for scope in scopes:
        for key in keys:
            value = scope.get(key)
            if value is not None:
                return value
    return None


def context_length(config: dict[str, Any]) -> int | None:
    value = config_value(config, *CONTEXT_KEYS)
    return value if isinstance(value, int) and value > 0 else None


def quantization_bits(config: dict[str, Any]) -> int | None:
    """MLX's ``quantization`` block (or HF's ``quantization_config``) bit width."""
    for key in ("quantization", "quantization_config"):
        block = config.get(key)
        if isinstance(block, dict) and isinstance(block.get("bits"), int):
            return block["bits"]
    return None


def metadata(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``show`` metadata block: architecture facts, nested text_config included."""
    if config is None:
        return None
    bits = quantization_bits(config)
    return {
        "model_type": config_value(config, "model_type"),
        "quantization": f"{bits}bit" if bits else None,
        "context_length": context_length(config),
        "vocab_size": config_value(config, "vocab_size"),
        "hidden_size": config_value(config, "hidden_size", "d_model", "n_embd"),
        "num_attention_heads": config_value(config, "num_attention_heads", "n_head"),
        "num_hidden_layers": config_value(config, "num_hidden_layers", "n_layer"),
    }
