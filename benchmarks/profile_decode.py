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


def interleaved(fns: dict[str, Any], rounds: int) -> dict[str, tuple[float, float]]:
    """(min, median) milliseconds of each function, calls interleaved round by round.

    Other processes only ever add time, so on a shared machine the minimum is the
    better estimate of a step's own cost; the median shows the noise.
    """
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - started) * 1000)
    return {name: (min(v), statistics.median(v)) for name, v in samples.items()}


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

    originals = [layer.mlp for layer in model.model.layers]
    compiled = []
    for mlp in originals:

        @mx.compile
        def swiglu(g: Any, u: Any) -> Any:
            return nn.silu(g) * u

        def compiled_mlp(x: Any, mlp: Any = mlp, swiglu: Any = swiglu) -> Any:
            return mlp.down_proj(swiglu(mlp.gate_proj(x), mlp.up_proj(x)))

        compiled.append(_Wrapped(compiled_mlp))

    def use(mlps: list[Any]) -> None:
        for layer, mlp in zip(model.model.layers, mlps, strict=True):
            layer.mlp = mlp

    def compiled_step() -> None:
        use(compiled)
        step()
        use(originals)

    figures = interleaved({"step": step, "matmuls": matmuls, "sampling": sampling,
                           "step, compiled MLP": compiled_step}, args.steps)
    width = max(len(k) for k in figures)
    print(f"{'':<{width}}  {'min':>8}  {'median':>8}")
    for name, (low, mid) in figures.items():
        print(f"{name:<{width}}  {low:8.2f}  {mid:8.2f} ms")
    rest = figures["step"][0] - figures["matmuls"][0]
    print(f"rest (step - matmuls, minima): {rest:.2f} ms; "
          f"decode ceiling from the step minimum: {1000 / figures['step'][0]:.1f} tok/s")
    return 0


class _Wrapped:
    """A callable in a module's place (``layer.mlp = ...`` accepts any attribute)."""

    def __init__(self, fn: Any) -> None:
        self._fn = fn

    def __call__(self, x: Any) -> Any:
        return self._fn(x)


if __name__ == "__main__":
    raise SystemExit(main())
