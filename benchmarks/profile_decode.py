"""Where a CPU decode step goes: matmuls against everything else, and what mx.compile changes.

Loads a model in float32 with OpenBLAS (as ``--cpu-dtype float32`` does), fills a
KV cache with a prompt, then times, per decode step (medians):

* ``step``: the whole forward pass for one token, evaluated;
* ``matmuls``: the same products alone (one ``x @ W.T`` per linear layer and the
  output layer, with a 1-row ``x``), evaluated as one graph;
* ``rest``: the difference, MLX's single-threaded non-matmul work and dispatch;
* ``step, compiled MLP``: each layer's MLP (``down(silu(gate(x)) * up(x))``) passed
  through ``mx.compile``, which fuses its elementwise ops;
* ``sampling``: a greedy ``argmax`` on the logits.

Usage: python benchmarks/profile_decode.py FOLDER [--steps 32] [--prompt-tokens 128]
       [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any


def timed(fn: Any, repeat: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeat`` calls, after one warm-up."""
    fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from mlxk2.engine.load import load_model

    loaded = load_model(args.model, cpu_dtype="float32", threads=args.threads)
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.models.cache import make_prompt_cache

    print(f"BLAS: {loaded.blas.backend if loaded.blas else '?'}, "
          f"threads {loaded.blas.threads if loaded.blas else '?'}; "
          f"dtype {loaded.cpu_dtype.dtype if loaded.cpu_dtype else '?'}")
    model = loaded.model
    cache = make_prompt_cache(model)
    prompt = mx.array(list(range(100, 100 + args.prompt_tokens)))[None]
    mx.eval(model(prompt, cache=cache))
    token = mx.array([[42]])

    def step() -> None:
        mx.eval(model(token, cache=cache))
        for layer_cache in cache:  # keep the cache length fixed from step to step
            layer_cache.offset -= 1

    linears = [m for _, m in model.named_modules() if isinstance(m, nn.Linear)]
    embed = getattr(model.model, "embed_tokens", None)
    heads = [m.weight for m in linears]
    if getattr(model, "lm_head", None) is None and embed is not None:
        heads.append(embed.weight)  # tied output layer
    rows = [mx.ones((1, w.shape[1]), dtype=mx.float32) for w in heads]

    def matmuls() -> None:
        mx.eval([x @ w.T for x, w in zip(rows, heads, strict=True)])

    logits = model(token, cache=cache)
    mx.eval(logits)
    for layer_cache in cache:
        layer_cache.offset -= 1

    def sampling() -> None:
        mx.eval(mx.argmax(logits[:, -1, :], axis=-1))

    figures = {"step": timed(step, args.steps), "matmuls": timed(matmuls, args.steps),
               "sampling": timed(sampling, args.steps)}
    figures["rest"] = figures["step"] - figures["matmuls"]

    for layer in model.model.layers:
        mlp = layer.mlp

        @mx.compile
        def swiglu(g: Any, u: Any) -> Any:
            return nn.silu(g) * u

        def compiled_mlp(x: Any, mlp: Any = mlp, swiglu: Any = swiglu) -> Any:
            return mlp.down_proj(swiglu(mlp.gate_proj(x), mlp.up_proj(x)))

        layer.mlp = _Wrapped(compiled_mlp)
    figures["step, compiled MLP"] = timed(step, args.steps)

    width = max(len(k) for k in figures)
    for name, ms in figures.items():
        print(f"{name:<{width}}  {ms:7.2f} ms")
    print(f"decode ceiling from step time: {1000 / figures['step']:.1f} tok/s")
    return 0


class _Wrapped:
    """A callable in a module's place (``layer.mlp = ...`` accepts any attribute)."""

    def __init__(self, fn: Any) -> None:
        self._fn = fn

    def __call__(self, x: Any) -> Any:
        return self._fn(x)


if __name__ == "__main__":
    raise SystemExit(main())
