"""Fewer MLX operations per decode step on a CPU: RMSNorm and RoPE through ``mx.compile``.

On a CPU device MLX has no kernel for ``mx.fast.rms_norm`` or ``mx.fast.rope``:
each call becomes its fallback graph, ~10 operations for a norm and ~20 for a
rotary embedding. MLX runs every operation of a step on one thread, with a
dispatch and an allocation each, so these small graphs (two norms and two
rotations per layer) cost a decode step more than their arithmetic.
``mx.compile`` fuses each graph's elementwise operations into a few kernels.

:func:`fuse_cpu_ops` swaps the class of every ``nn.RMSNorm`` and ``nn.RoPE`` in a
model for a subclass that calls the compiled function: weights, attributes and
the module tree stay as they were. RoPE is compiled only for an array offset,
which is what mlx-lm's ``BatchKVCache`` (behind ``run`` and ``serve``) passes; an
integer offset would be a constant of the trace and retrace at every position.
Both are compiled for decode only (one token per row): ``mx.compile`` keeps a
trace per input shape, and prompts come in every length, while a decode step's
shapes change only with the batch size. Prefill is dominated by its matmuls.
The results are the same operations in the same order, so greedy output stays
token for token what it was (tested on the real model).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn


@functools.cache
def _compiled_rms_norm(eps: float) -> Callable[[mx.array, mx.array], mx.array]:
    return mx.compile(lambda x, weight: mx.fast.rms_norm(x, weight, eps))


@functools.cache
def _compiled_rope(dims: int, traditional: bool, base: float | None,
                   scale: float) -> Callable[[mx.array, mx.array], mx.array]:
    return mx.compile(lambda x, offset: mx.fast.rope(
        x, dims, traditional=traditional, base=base, scale=scale, offset=offset))


class FusedRMSNorm(nn.RMSNorm):  # type: ignore[misc]  # mlx.nn ships no stubs
    """``nn.RMSNorm`` through one compiled function per ``eps``, for one token per row."""

    def __call__(self, x: mx.array) -> mx.array:
        if x.ndim < 2 or x.shape[-2] != 1:
            stock: mx.array = super().__call__(x)
            return stock
        return _compiled_rms_norm(self.eps)(x, self["weight"])


class FusedRoPE(nn.RoPE):  # type: ignore[misc]
    """``nn.RoPE`` compiled for one token per row at an array offset; else the stock path."""

    def __call__(self, x: mx.array, offset: int | mx.array = 0) -> mx.array:
        if not isinstance(offset, mx.array) or x.ndim < 2 or x.shape[-2] != 1:
            stock: mx.array = super().__call__(x, offset)
            return stock
        return _compiled_rope(self.dims, self.traditional, self.base, self.scale)(x, offset)


_FUSED: dict[type, type] = {nn.RMSNorm: FusedRMSNorm, nn.RoPE: FusedRoPE}


def fuse_cpu_ops(model: Any) -> int:
    """On a CPU device, swap the model's RMSNorm and RoPE modules for fused ones.

    Only the exact classes are swapped: subclasses keep their own ``__call__``.
    On Metal nothing changes, since both have real kernels there.

    Returns:
        How many modules were swapped.
    """
    if mx.default_device().type != mx.DeviceType.cpu:
        return 0
    swapped = 0
    for _, module in model.named_modules():
        fused = _FUSED.get(type(module))
        if fused is not None:
            module.__class__ = fused
            swapped += 1
    return swapped


def unfuse(model: Any) -> None:
    """Undo :func:`fuse_cpu_ops` (for side-by-side measurements)."""
    stock = {fused: plain for plain, fused in _FUSED.items()}
    for _, module in model.named_modules():
        plain = stock.get(type(module))
        if plain is not None:
            module.__class__ = plain
