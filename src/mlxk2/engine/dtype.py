"""Which dtype a model computes in on a CPU: the policy behind ``--cpu-dtype``.

On a CPU, MLX's bf16, fp16 and quantised matmuls are its own single-threaded
kernels; only float32 reaches BLAS. With OpenBLAS bound (:mod:`mlxk2.engine.blas`)
a small model is several times faster in float32 than as stored, at the memory
cost of the float32 copy. Policies:

- ``native``: keep the model as stored.
- ``float32``: dequantise (or upcast) to float32, whatever the device or size.
- ``auto`` (the CLI default): a quantised model is dequantised to float32 when
  MLX runs on the CPU, OpenBLAS is active and the float32 copy fits the budget, a
  quarter of physical RAM (``MLXK2_CPU_FP32_BUDGET`` in bytes overrides it);
  otherwise ``native``. On Metal, and without OpenBLAS, float32 is no faster, so
  ``auto`` is ``native``. bfloat16 and float16 models stay as stored under
  ``auto`` (their greedy output is what mlx-lm gives); ``float32`` upcasts them.

Dequantising is exact with respect to the stored values: scales and biases are
made float32 first, so ``scale * q + bias`` is computed in float32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mlxk2.system import memory_total_bytes

AUTO, NATIVE, FLOAT32 = "auto", "native", "float32"
CPU_DTYPE_POLICIES = (AUTO, NATIVE, FLOAT32)
BUDGET_ENV = "MLXK2_CPU_FP32_BUDGET"
#: The float32 copy may take this share of physical RAM under ``auto``.
BUDGET_SHARE = 4


@dataclass(frozen=True)
class DtypeChoice:
    """What the policy decided for one loaded model.

    Attributes:
        policy: The requested policy.
        dtype: What the model computes in now: ``"float32"``, or as stored
            (``"4-bit"``, ``"bfloat16"``...).
        stored: The model as stored on disk.
        float32_bytes: The size of a float32 copy of the weights.
        budget_bytes: The ``auto`` budget (None when RAM is unknown).
        reason: Why, in a few words.
    """

    policy: str
    dtype: str
    stored: str
    float32_bytes: int
    budget_bytes: int | None
    reason: str

    @property
    def converted(self) -> bool:
        return self.dtype != self.stored

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "dtype": self.dtype, "stored": self.stored,
                "float32_bytes": self.float32_bytes, "budget_bytes": self.budget_bytes,
                "reason": self.reason}


def float32_budget_bytes() -> int | None:
    """``MLXK2_CPU_FP32_BUDGET`` bytes if set, else a quarter of physical RAM."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if text.isdigit():
        return int(text)
    total = memory_total_bytes()
    return None if total is None else total // BUDGET_SHARE


def decide(policy: str, *, stored: str, float32_bytes: int, on_cpu: bool, blas_active: bool,
           budget_bytes: int | None) -> tuple[str, str]:
    """The dtype to compute in (``"float32"`` or ``stored``) and why.

    Raises:
        ValueError: an unknown policy.
    """
    if policy not in CPU_DTYPE_POLICIES:
        raise ValueError(f"unknown CPU dtype policy {policy!r}")
    if stored == FLOAT32:
        return stored, "stored as float32"
    if policy == NATIVE:
        return stored, "kept as stored"
    if policy == FLOAT32:
        return FLOAT32, "asked for"
    if not stored.endswith("-bit"):
        return stored, "as stored: auto dequantises quantised models only"
    if not on_cpu:
        return stored, "as stored: not running on the CPU"
    if not blas_active:
        return stored, "as stored: float32 is no faster without OpenBLAS"
    if budget_bytes is None or float32_bytes > budget_bytes:
        shown = "unknown" if budget_bytes is None else f"{budget_bytes} bytes"
        return stored, f"as stored: a float32 copy ({float32_bytes} bytes) exceeds the budget " \
                       f"({shown})"
    return FLOAT32, "dequantised: float32 is faster on the CPU with OpenBLAS"


def _quantised_modules(model: Any) -> dict[str, Any]:
    """Quantised modules by name.

    Every MLX quantised layer (``QuantizedLinear``, ``QuantizedEmbedding``, mlx-lm's
    ``QuantizedSwitchLinear``) holds ``scales`` and its ``bits``.
    """
    return {name: module for name, module in model.named_modules()
            if hasattr(module, "bits") and "scales" in module}


def _leaves(model: Any) -> list[tuple[str, Any]]:
    """``(dotted name, array)`` for every parameter."""
    from mlx.utils import tree_flatten

    flat = tree_flatten(model.parameters())
    assert isinstance(flat, list)  # the dict form is only for ``destination=dict``
    return flat


def stored_dtype(model: Any) -> str:
    """``"4-bit"`` for a quantised model, else its weights' dtype.

    A model quantised at several widths (a GGUF with an 8-bit embedding and 4-bit
    layers) is named by the width that holds the most weights.
    """
    by_bits: dict[int, int] = {}
    for module in _quantised_modules(model).values():
        bits = int(module.bits)
        by_bits[bits] = by_bits.get(bits, 0) + module.weight.size * 32 // bits
    if by_bits:
        return f"{max(by_bits, key=lambda bits: by_bits[bits])}-bit"
    sizes: dict[str, int] = {}
    for _, value in _leaves(model):
        name = str(value.dtype).removeprefix("mlx.core.")
        sizes[name] = sizes.get(name, 0) + value.size
    return max(sizes, key=lambda name: sizes[name]) if sizes else FLOAT32


def float32_size(model: Any) -> int:
    """Bytes of the weights in float32, quantised weights counted as dequantised."""
    quantised = _quantised_modules(model)
    elements = 0
    for name, value in _leaves(model):
        owner, _, leaf = name.rpartition(".")
        if owner in quantised:
            if leaf == "weight":  # packed: 32 // bits values per uint32
                elements += value.size * 32 // int(quantised[owner].bits)
            elif leaf in ("scales", "biases"):
                continue
            else:
                elements += value.size
        else:
            elements += value.size
    return elements * 4


def to_float32(model: Any) -> None:
    """Dequantise and upcast every weight to float32 in place (mlx-lm's helper)."""
    import mlx.core as mx
    from mlx_lm.utils import dequantize_model

    model.set_dtype(mx.float32)  # scales and biases first, so dequantising is exact
    dequantize_model(model)
    mx.eval(model.parameters())


def apply_cpu_dtype(model: Any, policy: str, *, blas_active: bool,
                    budget_bytes: int | None = None) -> DtypeChoice:
    """Decide with :func:`decide` and convert ``model`` in place when it says float32.

    Args:
        model: An mlx-lm model, freshly loaded.
        policy: ``"auto"``, ``"native"`` or ``"float32"``.
        blas_active: OpenBLAS is bound and verified in this process.
        budget_bytes: The ``auto`` budget (default: :func:`float32_budget_bytes`).
    """
    import mlx.core as mx

    stored = stored_dtype(model)
    size = float32_size(model)
    budget = float32_budget_bytes() if budget_bytes is None else budget_bytes
    on_cpu = mx.default_device().type == mx.DeviceType.cpu
    dtype, reason = decide(policy, stored=stored, float32_bytes=size, on_cpu=on_cpu,
                           blas_active=blas_active, budget_bytes=budget)
    if dtype != stored:
        to_float32(model)
    return DtypeChoice(policy, dtype, stored, size, budget, reason)
