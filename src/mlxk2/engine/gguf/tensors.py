"""GGUF tensors to mlx-lm weights.

Two paths, picked per file:

- Every tensor is F32, F16, BF16, Q8_0, Q4_0 or Q4_1: ``mx.load`` reads the file
  and returns the quantised types as MLX affine weights (group size 32) with
  their exact values (BF16 is taken from the file's bytes instead, since
  ``mx.load`` rounds it to float16). Nothing is lost.
- Any other type (K-quants, IQ types): each tensor is memory-mapped and
  dequantised with the ``gguf`` package, llama.cpp's own reference code, then
  quantised again by MLX. The values change, and the result says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlxk2.engine.gguf.architectures import (
    Architecture,
    hf_name,
    permuted_heads,
    unpermute_rows,
)
from mlxk2.engine.gguf.reader import GgufHeader, TensorInfo, tensor_bytes
from mlxk2.errors import ModelIncompatibleError

FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})
#: GGUF types MLX loads as affine quantised weights: type -> (bits, group size).
NATIVE_QUANT = {"Q8_0": (8, 32), "Q4_0": (4, 32), "Q4_1": (4, 32)}
LOSSLESS_TYPES = FLOAT_TYPES | frozenset(NATIVE_QUANT)
#: Requantisation width for a dequantised type when ``--bits`` is not given:
#: never fewer bits than the source spends per weight, rounded up to MLX's widths.
_DEFAULT_BITS = {"Q8_0": 8, "Q8_1": 8, "Q8_K": 8, "Q6_K": 6, "Q5_0": 6, "Q5_1": 6, "Q5_K": 6}
DEFAULT_BITS = 4
DEFAULT_GROUP_SIZE = 64

#: ``progress(stage, done, total)``.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Quantized:
    bits: int
    group_size: int


@dataclass
class Weights:
    """The converted parameters, and what happened on the way."""

    arrays: dict[str, Any] = field(default_factory=dict)
    quantized: dict[str, Quantized] = field(default_factory=dict)  # module path -> params
    lossless: bool = True
    source_types: Counter[str] = field(default_factory=Counter)

    def quantization_config(self) -> dict[str, Any] | None:
        """mlx-lm's ``quantization``: the commonest setting, plus per-module exceptions."""
        if not self.quantized:
            return None
        common, _ = Counter(self.quantized.values()).most_common(1)[0]
        config: dict[str, Any] = {
            "group_size": common.group_size, "bits": common.bits, "mode": "affine"
        }
        for module, params in sorted(self.quantized.items()):
            if params != common:
                config[module] = {"group_size": params.group_size, "bits": params.bits}
        return config


def convert_weights(
    header: GgufHeader,
    arch: Architecture,
    config: dict[str, Any],
    *,
    bits: int | None = None,
    group_size: int | None = None,
    dtype: str | None = None,
    progress: Progress | None = None,
) -> Weights:
    """Every tensor of ``header`` under its mlx-lm name.

    Args:
        header: The parsed file.
        arch: Its architecture (names, row permutation).
        config: The model config (head counts for the permutation).
        bits, group_size: MLX quantisation for dequantised types (defaults: as
            many bits as the source type, group size 64). Lossless types keep theirs.
        dtype: Cast floating-point tensors to this dtype; None keeps them as stored.
        progress: Called once per tensor.

    Raises:
        ModelIncompatibleError: A tensor type that cannot be read, naming the type
            and the tensor (``check_importable`` has refused unmapped tensors already).
    """
    report = progress or (lambda stage, done, total: None)
    weights = Weights(source_types=Counter(t.type_name for t in header.tensors))
    tensors = list(_mapped(header))
    native = all(t.type_name in LOSSLESS_TYPES for t, _ in tensors)
    if native:
        import mlx.core as mx

        loaded = mx.load(str(header.path), format="gguf")  # Ollama blobs have no extension
        assert isinstance(loaded, dict)  # a GGUF file loads as a dict of arrays
        source = _native_arrays(header, loaded)
    else:
        source = _dequantised_arrays(header, bits, group_size, dtype)
    for done, (tensor, target) in enumerate(tensors, start=1):
        parts = source(tensor)
        heads = permuted_heads(arch, tensor.name, config)
        if heads is not None:
            parts = {suffix: unpermute_rows(value, heads) for suffix, value in parts.items()}
        base = target.rsplit(".", 1)[0]
        if "scales" in parts:
            weights.quantized[base] = _quant_params(tensor, parts)
            if not native:
                weights.lossless = False
        for suffix, value in parts.items():
            name = target if suffix == "" else f"{base}.{suffix}"
            weights.arrays[name] = _cast(value, dtype, weights)
        report("Converting tensors", done, len(tensors))
    return weights


def _mapped(header: GgufHeader) -> Iterator[tuple[TensorInfo, str]]:
    """Tensors with their mlx-lm names (``check_importable`` refused unmapped ones)."""
    for tensor in header.tensors:
        target = hf_name(tensor.name)
        assert target is not None, tensor.name
        yield tensor, target


def _native_arrays(
    header: GgufHeader, loaded: dict[str, Any]
) -> Callable[[TensorInfo], dict[str, Any]]:
    def arrays(tensor: TensorInfo) -> dict[str, Any]:
        if tensor.type_name == "BF16":  # mx.load turns BF16 into float16, which is lossy
            return {"": _bfloat16(header, tensor)}
        if tensor.type_name in FLOAT_TYPES:
            return {"": loaded[tensor.name]}
        base = tensor.name.rsplit(".", 1)[0]
        parts = {
            "weight": loaded[tensor.name],
            "scales": loaded[f"{base}.scales"],
            "biases": loaded[f"{base}.biases"],
        }
        expected_bits, expected_group = NATIVE_QUANT[tensor.type_name]
        got = _quant_params(tensor, parts)
        if (got.bits, got.group_size) != (expected_bits, expected_group):
            raise ModelIncompatibleError(
                f"MLX read {tensor.type_name} tensor '{tensor.name}' as {got.bits} bits, "
                f"group size {got.group_size}; expected {expected_bits} bits, "
                f"group size {expected_group}"
            )
        return parts

    return arrays


def _dequantised_arrays(
    header: GgufHeader, bits: int | None, group_size: int | None, dtype: str | None
) -> Callable[[TensorInfo], dict[str, Any]]:
    import mlx.core as mx
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    group = group_size or DEFAULT_GROUP_SIZE
    scale_dtype = getattr(mx, dtype or "float16")

    def arrays(tensor: TensorInfo) -> dict[str, Any]:
        raw = tensor_bytes(header, tensor)
        kind = tensor.type_name
        if kind == "F32":
            return {"": mx.array(raw.view(np.float32).reshape(tensor.shape))}
        if kind == "F16":
            return {"": mx.array(raw.view(np.float16).reshape(tensor.shape))}
        if kind == "BF16":
            return {"": _bfloat16(header, tensor)}
        try:
            values = dequantize(raw, GGMLQuantizationType(tensor.type_id))
        except (NotImplementedError, ValueError) as exc:
            raise ModelIncompatibleError(
                f"GGUF tensor type {kind} (tensor '{tensor.name}') cannot be read: "
                "the gguf package has no dequantisation for it"
            ) from exc
        dense = mx.array(values.reshape(tensor.shape).astype(np.float32))
        width = bits or _DEFAULT_BITS.get(kind, DEFAULT_BITS)
        if dense.ndim != 2 or dense.shape[-1] % group or not tensor.name.endswith(".weight"):
            return {"": dense}
        weight, scales, biases = mx.quantize(
            dense.astype(scale_dtype), group_size=group, bits=width
        )
        mx.eval(weight, scales, biases)  # frees the float copy now, not at save time
        return {"weight": weight, "scales": scales, "biases": biases}

    return arrays


def _bfloat16(header: GgufHeader, tensor: TensorInfo) -> Any:
    import mlx.core as mx

    raw = tensor_bytes(header, tensor)
    return mx.array(raw.view(np.uint16).reshape(tensor.shape)).view(mx.bfloat16)


def _quant_params(tensor: TensorInfo, parts: dict[str, Any]) -> Quantized:
    """Bits and group size, recovered from the packed shapes as mlx-lm does."""
    in_dims = tensor.shape[-1]
    group_size = in_dims // parts["scales"].shape[-1]
    bits = parts["weight"].shape[-1] * 32 // in_dims
    return Quantized(bits=bits, group_size=group_size)


def _cast(value: Any, dtype: str | None, weights: Weights) -> Any:
    """Cast floating-point arrays; packed integer weights stay as they are."""
    import mlx.core as mx

    if dtype is None or not mx.issubdtype(value.dtype, mx.floating):
        return value
    target = getattr(mx, dtype)
    if value.dtype == target:
        return value
    cast = value.astype(target)
    if weights.lossless and not mx.array_equal(cast.astype(value.dtype), value).item():
        weights.lossless = False
    return cast
