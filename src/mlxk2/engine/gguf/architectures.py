"""Per-architecture facts: the mlx-lm config and tensor names for a GGUF's metadata.

llama.cpp names tensors ``blk.N.attn_q.weight``; mlx-lm uses Hugging Face's
``model.layers.N.self_attn.q_proj.weight``. For the ``llama`` architecture
llama.cpp's converter also reorders the rows of ``attn_q`` and ``attn_k`` (it
interleaves the two rotary halves of every head); :func:`unpermute_rows` puts
them back. qwen2 and qwen3 use the non-interleaved rotary layout, so their rows
are stored as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlxk2.errors import ModelIncompatibleError

#: Per-layer tensor names, llama.cpp -> Hugging Face (shared by every supported architecture).
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LAYER = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_GLOBAL = re.compile(r"^([a-z_]+)\.(weight|bias)$")


@dataclass(frozen=True)
class Architecture:
    """How one GGUF architecture becomes an mlx-lm model."""

    name: str
    model_type: str
    hf_class: str
    permutes_qk: bool
    extra_config: Callable[[dict[str, Any], str], dict[str, Any]]


def _no_extra(metadata: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {}


def _qwen3_extra(metadata: dict[str, Any], prefix: str) -> dict[str, Any]:
    heads = int(metadata[f"{prefix}.attention.head_count"])
    width = int(metadata[f"{prefix}.embedding_length"])
    return {"head_dim": int(metadata.get(f"{prefix}.attention.key_length", width // heads))}


ARCHITECTURES = {
    arch.name: arch
    for arch in (
        Architecture("llama", "llama", "LlamaForCausalLM", True, _no_extra),
        Architecture("qwen2", "qwen2", "Qwen2ForCausalLM", False, _no_extra),
        Architecture("qwen3", "qwen3", "Qwen3ForCausalLM", False, _qwen3_extra),
    )
}


def architecture_for(name: str) -> Architecture:
    """The supported architecture called ``name`` in ``general.architecture``.

    Raises:
        ModelIncompatibleError: Naming the architecture and the supported ones.
    """
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ModelIncompatibleError(
            f"GGUF architecture '{name or 'unknown'}' cannot be imported; "
            f"supported: {', '.join(ARCHITECTURES)}"
        ) from None


def build_config(arch: Architecture, metadata: dict[str, Any], *, vocab_size: int,
                 tied_embeddings: bool) -> dict[str, Any]:
    """The ``config.json`` mlx-lm (and transformers) read for this model.

    Raises:
        ModelIncompatibleError: A required hyperparameter is missing, or the
            model uses RoPE scaling this importer cannot express.
    """
    prefix = arch.name
    try:
        heads = int(metadata[f"{prefix}.attention.head_count"])
        width = int(metadata[f"{prefix}.embedding_length"])
        config: dict[str, Any] = {
            "model_type": arch.model_type,
            "architectures": [arch.hf_class],
            "hidden_size": width,
            "num_hidden_layers": int(metadata[f"{prefix}.block_count"]),
            "intermediate_size": int(metadata[f"{prefix}.feed_forward_length"]),
            "num_attention_heads": heads,
            "num_key_value_heads": int(metadata.get(f"{prefix}.attention.head_count_kv", heads)),
            "rms_norm_eps": _short(metadata[f"{prefix}.attention.layer_norm_rms_epsilon"]),
            "vocab_size": vocab_size,
            "max_position_embeddings": int(metadata[f"{prefix}.context_length"]),
            "rope_theta": _short(metadata.get(f"{prefix}.rope.freq_base", 10000.0)),
            "tie_word_embeddings": tied_embeddings,
        }
    except KeyError as exc:
        raise ModelIncompatibleError(f"GGUF metadata lacks {exc.args[0]}") from None
    key_length = metadata.get(f"{prefix}.attention.key_length")
    if key_length is not None and int(key_length) != width // heads:
        config["head_dim"] = int(key_length)
    config.update(arch.extra_config(metadata, prefix))
    scaling = metadata.get(f"{prefix}.rope.scaling.type")
    if scaling == "linear":
        config["rope_scaling"] = {
            "type": "linear", "factor": float(metadata[f"{prefix}.rope.scaling.factor"])
        }
    elif scaling not in (None, "none"):
        raise ModelIncompatibleError(f"GGUF RoPE scaling '{scaling}' cannot be imported yet")
    return config


def hf_name(gguf_name: str) -> str | None:
    """The mlx-lm parameter name, or None for a tensor mlx-lm has no place for.

    Raises:
        ModelIncompatibleError: ``rope_freqs`` (per-frequency RoPE factors, as
            Llama 3.1 files carry), which mlx-lm cannot take as a tensor.
    """
    if gguf_name == "rope_freqs.weight":
        raise ModelIncompatibleError(
            "This GGUF carries per-frequency RoPE factors (rope_freqs), "
            "which cannot be imported yet"
        )
    if match := _LAYER.match(gguf_name):
        layer, part, kind = match.groups()
        target = _LAYER_NAMES.get(part)
        return None if target is None else f"model.layers.{layer}.{target}.{kind}"
    if match := _GLOBAL.match(gguf_name):
        part, kind = match.groups()
        target = _GLOBAL_NAMES.get(part)
        return None if target is None else f"{target}.{kind}"
    return None


def permuted_heads(arch: Architecture, gguf_name: str, config: dict[str, Any]) -> int | None:
    """The head count whose rows llama.cpp interleaved in this tensor, or None."""
    if not arch.permutes_qk:
        return None
    if re.search(r"\.attn_q\.(weight|bias)$", gguf_name):
        return int(config["num_attention_heads"])
    if re.search(r"\.attn_k\.(weight|bias)$", gguf_name):
        return int(config["num_key_value_heads"])
    return None


def unpermute_rows(rows: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's ``permute``: per head, rows ``(a0, b0, a1, b1, ...)`` back to
    ``(a0, a1, ..., b0, b1, ...)``. Works on packed quantised rows too, since
    only whole rows move."""
    n_rows = rows.shape[0]
    per_head = n_rows // heads
    tail = rows.shape[1:]
    undone: np.ndarray = rows.reshape(heads, per_head // 2, 2, *tail).swapaxes(1, 2)
    return undone.reshape(n_rows, *tail)


def _short(value: Any) -> float:
    """A float32 from the file as the decimal it was written from (1e-05, not 9.99e-06)."""
    return float(f"{float(value):.7g}")
