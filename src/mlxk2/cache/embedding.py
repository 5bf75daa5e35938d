"""Can this model embed? The one rule, read from small files without importing MLX.

mlxk2's own encoder (:mod:`mlxk2.engine.embed`) runs BERT-family models straight
from their safetensors weights, so an embedding repo without an MLX marker is
runnable for ``embed`` all the same. The pipeline comes from the
sentence-transformers files: ``modules.json``, ``1_Pooling/config.json`` and
``sentence_bert_config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: ``config.json`` model types the encoder implements.
ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta"})
#: Types whose position ids start after the padding id, as in fairseq's RoBERTa.
POSITION_OFFSET_TYPES = frozenset({"roberta", "xlm-roberta"})
_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"
#: ``1_Pooling/config.json`` flags and the pooling each one names.
POOLING_MODES = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
}
_UNSUPPORTED_POOLING = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")


@dataclass(frozen=True)
class EmbeddingPipeline:
    """What the sentence-transformers files ask for after the encoder."""

    pooling: str = "mean"
    normalize: bool = False
    max_seq_length: int | None = None
    problem: str | None = None


def embedding_pipeline(path: Path) -> EmbeddingPipeline:
    """Read the pipeline; a folder without ``modules.json`` gets mean pooling, as in
    sentence-transformers. ``problem`` names the first module or mode not supported."""
    modules = _read_json(path / "modules.json")
    max_len = _read_json(path / "sentence_bert_config.json")
    max_seq = max_len.get("max_seq_length") if isinstance(max_len, dict) else None
    max_seq = max_seq if isinstance(max_seq, int) and max_seq > 0 else None
    if modules is None:
        return EmbeddingPipeline(max_seq_length=max_seq)
    if not isinstance(modules, list):
        return EmbeddingPipeline(problem="modules.json is not a list of modules")
    pooling, normalize = "mean", False
    for module in modules:
        kind = module.get("type") if isinstance(module, dict) else None
        if kind == _TRANSFORMER:
            continue
        if kind == _POOLING:
            mode, problem = _pooling_mode(path / str(module.get("path") or "1_Pooling"))
            if problem is not None:
                return EmbeddingPipeline(problem=problem)
            pooling = mode
        elif kind == _NORMALIZE:
            normalize = True
        else:
            return EmbeddingPipeline(problem=f"the sentence-transformers module '{kind}' "
                                             "is not supported")
    return EmbeddingPipeline(pooling, normalize, max_seq)


def _pooling_mode(folder: Path) -> tuple[str, str | None]:
    config = _read_json(folder / "config.json")
    if not isinstance(config, dict):
        return "mean", None
    chosen = [mode for key, mode in POOLING_MODES.items() if config.get(key)]
    unsupported = [key for key in _UNSUPPORTED_POOLING if config.get(key)]
    if unsupported:
        return "", f"pooling '{unsupported[0]}' is not supported"
    if len(chosen) > 1:
        return "", f"combined pooling ({' + '.join(chosen)}) is not supported"
    return (chosen[0] if chosen else "mean"), None


def embedding_reason(path: Path, names: set[str], config: dict[str, Any] | None,
                     framework: str) -> str | None:
    """Why mlxk2's encoder cannot embed with this (healthy) model, or None if it can.

    Args:
        path: The snapshot or workspace folder.
        names: File names at its top level.
        config: The parsed ``config.json``.
        framework: What :func:`mlxk2.cache.inspect.detect_framework` found.
    """
    if framework == "GGUF":
        return "Framework GGUF not executable with mlxk2's encoder (needs safetensors)"
    model_type = str((config or {}).get("model_type") or "").lower()
    if model_type not in ENCODER_TYPES:
        shown = model_type or "unknown"
        return (f"Embedding architecture '{shown}' is not supported by mlxk2's encoder "
                f"(supported: {', '.join(sorted(ENCODER_TYPES))})")
    if isinstance((config or {}).get("quantization"), dict):
        return "Quantized encoders are not supported by mlxk2's encoder"
    if not any(n.endswith(".safetensors") for n in names):
        return "Embedding weights are PyTorch .bin only; mlxk2 embeds from safetensors"
    if "tokenizer.json" not in names:
        return "No tokenizer.json: embedding needs a fast tokenizer"
    problem = embedding_pipeline(path).problem
    return None if problem is None else f"Embedding pipeline: {problem}"


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_bytes())
    except (OSError, ValueError):
        return None
