"""Reading ``config.json`` tolerantly and pulling the facts commands need from it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Config keys that hold the context length, most common first.
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
    for scope in _scopes(config):
        for key in keys:
            value = scope.get(key)
            if value is not None:
                return value
    return None


def _scopes(config: dict[str, Any]) -> list[dict[str, Any]]:
    nested = config.get("text_config")
    return [config, nested] if isinstance(nested, dict) else [config]


def context_length(config: dict[str, Any]) -> int | None:
    """The context window: the first positive whole number among ``CONTEXT_KEYS``,
    top level first, then ``text_config``. ``show`` and the engine both read it here."""
    for scope in _scopes(config):
        for key in CONTEXT_KEYS:
            value = scope.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def quantization_bits(config: dict[str, Any]) -> int | None:
    """MLX's ``quantization`` block (or HF's ``quantization_config``) bit width."""
    for key in ("quantization", "quantization_config"):
        block = config.get(key)
        bits = block.get("bits") if isinstance(block, dict) else None
        if isinstance(bits, int):
            return bits
    return None


@dataclass(frozen=True)
class ModelMetadata:
    """Architecture facts for ``show``, nested ``text_config`` included."""

    model_type: Any
    quantization_bits: int | None
    context_length: int | None
    vocab_size: Any
    hidden_size: Any
    num_attention_heads: Any
    num_hidden_layers: Any

    @property
    def quantization(self) -> str | None:
        return f"{self.quantization_bits}bit" if self.quantization_bits else None

    def to_dict(self) -> dict[str, Any]:
        """The spec's ``metadata`` block, in its key order."""
        return {
            "model_type": self.model_type,
            "quantization": self.quantization,
            "context_length": self.context_length,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
        }


def metadata(config: dict[str, Any] | None) -> ModelMetadata | None:
    """The ``show`` metadata of a parsed config; None without one."""
    if config is None:
        return None
    return ModelMetadata(
        model_type=config_value(config, "model_type"),
        quantization_bits=quantization_bits(config),
        context_length=context_length(config),
        vocab_size=config_value(config, "vocab_size"),
        hidden_size=config_value(config, "hidden_size", "d_model", "n_embd"),
        num_attention_heads=config_value(config, "num_attention_heads", "n_head"),
        num_hidden_layers=config_value(config, "num_hidden_layers", "n_layer"),
    )
