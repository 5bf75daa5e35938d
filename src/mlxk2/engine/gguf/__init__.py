"""GGUF files (llama.cpp, Ollama, LM Studio) turned into MLX model folders.

:func:`read_header` parses a file without touching its weights;
:func:`check_importable` refuses what cannot be converted, before anything is
written; :func:`write_mlx_model` writes ``config.json``, safetensors shards
with their index, the tokenizer files and ``generation_config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxk2.engine.gguf.architectures import Architecture, architecture_for, build_config, hf_name
from mlxk2.engine.gguf.reader import GgufHeader, read_header
from mlxk2.engine.gguf.tensors import LOSSLESS_TYPES, Progress, convert_weights
from mlxk2.engine.gguf.tokenizer import check_tokenizer, write_tokenizer
from mlxk2.errors import ModelIncompatibleError

__all__ = ["GgufHeader", "ImportedModel", "check_importable", "read_header", "write_mlx_model"]


@dataclass(frozen=True)
class ImportedModel:
    """What was written: ``tensor_types`` counts the source tensors per GGUF type."""

    architecture: str
    model_type: str
    lossless: bool
    tensor_types: dict[str, int]
    quantization: dict[str, Any] | None
    files: tuple[str, ...]


def check_importable(header: GgufHeader) -> Architecture:
    """Everything that can be refused from the header alone.

    Raises:
        ModelIncompatibleError: An unsupported architecture, tensor, tokenizer
            or tensor type, named.
    """
    arch = architecture_for(header.architecture)
    splits = int(header.metadata.get("split.count", 1))
    if splits > 1:
        raise ModelIncompatibleError(
            f"{header.path.name} is one part of a GGUF split into {splits} files, "
            "which cannot be imported yet; merge it with llama.cpp's gguf-split first"
        )
    for tensor in header.tensors:
        if hf_name(tensor.name) is None:
            raise ModelIncompatibleError(
                f"GGUF tensor '{tensor.name}' has no counterpart in mlx-lm's {arch.name} model"
            )
        if tensor.type_name not in LOSSLESS_TYPES and not _dequantisable(tensor.type_id):
            raise ModelIncompatibleError(
                f"GGUF tensor type {tensor.type_name} (tensor '{tensor.name}') cannot be read"
            )
    check_tokenizer(header.metadata)
    return arch


def write_mlx_model(
    header: GgufHeader,
    dest: Path,
    *,
    bits: int | None = None,
    group_size: int | None = None,
    dtype: str | None = None,
    progress: Progress | None = None,
) -> ImportedModel:
    """Write the MLX model for ``header`` into the existing folder ``dest``.

    Args:
        header: From :func:`read_header`.
        dest: An existing folder; files in it are overwritten.
        bits, group_size: MLX quantisation for types MLX cannot load exactly.
        dtype: Cast floating-point tensors (``float16``, ``bfloat16``, ``float32``).
        progress: ``progress(stage, done, total)`` as tensors are converted.

    Raises:
        ModelIncompatibleError: As :func:`check_importable`, or a tokenizer
            this importer cannot rebuild.
        OSError: Writing failed.
    """
    import mlx.core as mx
    from mlx_lm.utils import make_shards

    arch = check_importable(header)
    names = {t.name: t for t in header.tensors}
    embedding = names.get("token_embd.weight")
    if embedding is None:
        raise ModelIncompatibleError("The GGUF file has no token embedding (token_embd)")
    context = int(header.metadata.get(f"{arch.name}.context_length", 4096))
    facts = write_tokenizer(header.metadata, dest, context_length=context)
    config = build_config(arch, header.metadata, vocab_size=embedding.shape[0],
                          tied_embeddings="output.weight" not in names)
    weights = convert_weights(header, arch, config, bits=bits, group_size=group_size,
                              dtype=dtype, progress=progress)
    quantization = weights.quantization_config()
    if quantization is not None:
        config["quantization"] = config["quantization_config"] = quantization
    config.update({
        "bos_token_id": facts.bos_token_id,
        "eos_token_id": list(facts.eos_token_ids) if len(facts.eos_token_ids) > 1
        else next(iter(facts.eos_token_ids), None),
        "torch_dtype": dtype or _float_dtype(weights.arrays),
    })

    shards = make_shards(weights.arrays)
    pattern = "model-{:05d}-of-{:05d}.safetensors" if len(shards) > 1 else "model.safetensors"
    weight_map: dict[str, str] = {}
    files = []
    for number, shard in enumerate(shards, start=1):
        name = pattern.format(number, len(shards))
        mx.save_safetensors(str(dest / name), shard, metadata={"format": "mlx"})
        weight_map.update(dict.fromkeys(shard, name))
        files.append(name)
    index = {"metadata": {"total_size": sum(v.nbytes for v in weights.arrays.values())},
             "weight_map": dict(sorted(weight_map.items()))}
    _write_json(dest / "model.safetensors.index.json", index)
    _write_json(dest / "config.json", config)
    generation = {k: config[k] for k in ("bos_token_id", "eos_token_id") if config[k] is not None}
    if facts.pad_token_id is not None:
        generation["pad_token_id"] = facts.pad_token_id
    _write_json(dest / "generation_config.json", generation)
    (dest / "README.md").write_text(_model_card(header, arch, weights.lossless))
    return ImportedModel(
        architecture=arch.name,
        model_type=arch.model_type,
        lossless=weights.lossless,
        tensor_types=dict(sorted(weights.source_types.items())),
        quantization=quantization,
        files=tuple(sorted(p.name for p in dest.iterdir() if p.is_file())),
    )


def _dequantisable(type_id: int) -> bool:
    from gguf import GGMLQuantizationType
    from gguf.quants import _type_traits  # the types gguf can dequantise

    try:
        return GGMLQuantizationType(type_id) in _type_traits
    except ValueError:
        return False


def _float_dtype(arrays: dict[str, Any]) -> str:
    """The commonest floating-point dtype among the weights, by size."""
    import mlx.core as mx

    sizes: dict[str, int] = {}
    for value in arrays.values():
        if mx.issubdtype(value.dtype, mx.floating):
            key = str(value.dtype).rsplit(".", 1)[-1]
            sizes[key] = sizes.get(key, 0) + value.nbytes
    return max(sizes, key=sizes.__getitem__) if sizes else "float16"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _model_card(header: GgufHeader, arch: Architecture, lossless: bool) -> str:
    name = header.metadata.get("general.name") or header.path.stem
    license_id = header.metadata.get("general.license")
    front = "---\nlibrary_name: mlx\ntags:\n- mlx\n- gguf-import\n"
    if license_id:
        front += f"license: {license_id}\n"
    front += "pipeline_tag: text-generation\n---\n"
    how = "with every weight value kept exactly" if lossless else \
        "dequantised with the gguf package and requantised by MLX"
    return (
        f"{front}# {name}\n\nImported by `mlxk2 import` from `{header.path.name}` "
        f"({arch.name} architecture), {how}.\n"
    )
