"""Where a CPU decode step goes: matmuls against everything else, and what fusing saves.

Loads a model in float32 with OpenBLAS (as ``--cpu-dtype float32`` does), fills a
KV cache with a prompt, then times, per decode step, interleaved round by round:

* ``step``: the whole forward pass for one token on mlx-lm's plain KV cache, with
  MLX's stock RMSNorm and RoPE, evaluated;
* ``matmuls``: the same products alone (one ``x @ W.T`` per linear layer and the
  output layer, with a 1-row ``x``), evaluated as one graph;
* ``rest``: the difference, MLX's single-threaded non-matmul work and dispatch;
* ``sampling``: a greedy ``argmax`` on the logits;
* then, in alternating runs of ``--steps`` tokens, the decode steps of the core
  that ``run`` and ``serve`` drive (:class:`mlxk2.engine.batch.ModelBatch`, one
  greedy request), without and with :func:`mlxk2.engine.fused.fuse_cpu_ops`, and
  whether both gave the same greedy tokens (they must). Whole runs alternate,
  not single steps: a step evaluates the next token asynchronously, so
  interleaved steps of two requests would time each other's work.

Wall-clock minima and medians, and the median CPU time of the process (less
sensitive to other processes on a shared machine).

Usage: python benchmarks/profile_decode.py FOLDER [--steps 32] [--prompt-tokens 128]
       [--threads N] [--rounds 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any


def interleaved(fns: dict[str, Any], rounds: int) -> dict[str, tuple[float, float, float]]:
    """(wall min, wall median, CPU median) milliseconds of each function, calls
    interleaved round by round.

    Other processes only ever add time, so on a shared machine the minimum is the
    better estimate of a step's own wall time; the median shows the noise. CPU
    time counts only this process's work.
    """
    for fn in fns.values():
        fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append((time.perf_counter() - started) * 1000)
            cpu[name].append((time.process_time() - started_cpu) * 1000)
    return {name: (min(wall[name]), statistics.median(wall[name]), statistics.median(cpu[name]))
            for name in fns}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=4, help="stock / fused run pairs")
    args = parser.parse_args()

    from mlxk2.engine.load import load_model

    loaded = load_model(args.model, cpu_dtype="float32", threads=args.threads)
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.models.cache import make_prompt_cache

    from mlxk2.engine.fused import fuse_cpu_ops, unfuse

    print(f"BLAS: {loaded.blas.backend if loaded.blas else '?'}, "
          f"threads {loaded.blas.threads if loaded.blas else '?'}; "
          f"dtype {loaded.cpu_dtype.dtype if loaded.cpu_dtype else '?'}")
    model = loaded.model
    unfuse(model)
    cache = make_prompt_cache(model)
    prompt_tokens = list(range(100, 100 + args.prompt_tokens))
    mx.eval(model(mx.array(prompt_tokens)[None], cache=cache))
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

    figures = interleaved({"step": step, "matmuls": matmuls, "sampling": sampling},
                          args.steps)
    fused_runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    tokens: dict[bool, tuple[int, ...]] = {}
    for _ in range(args.rounds):
        for fused in (False, True):
            (fuse_cpu_ops if fused else unfuse)(model)
            wall, cpu, tokens[fused] = batch_run(loaded, prompt_tokens, args.steps)
            fused_runs[fused].append((min(wall), statistics.median(cpu)))
    unfuse(model)
    width = max(len(k) for k in figures)
    print(f"{'':<{width}}  {'wall min':>9}  {'median':>8}  {'CPU median':>10}")
    for name, (low, mid, cpu) in figures.items():
        print(f"{name:<{width}}  {low:9.2f}  {mid:8.2f}  {cpu:10.2f} ms")
    rest = figures["step"][0] - figures["matmuls"][0]
    print(f"rest (step - matmuls, minima): {rest:.2f} ms; "
          f"decode ceiling from the step minimum: {1000 / figures['step'][0]:.1f} tok/s")
    print(f"\nModelBatch decode steps, {args.steps}-token runs alternating stock / fused "
          "(wall min, CPU median per run):")
    for fused, runs in fused_runs.items():
        label = "fused" if fused else "stock"
        print(f"  {label}: " + ", ".join(f"{low:.1f} / {cpu:.1f}" for low, cpu in runs) + " ms")
    cpu_ratios = [s[1] / f[1] for s, f in zip(fused_runs[False], fused_runs[True], strict=True)]
    wall_ratios = [s[0] / f[0] for s, f in zip(fused_runs[False], fused_runs[True], strict=True)]
    print(f"stock / fused per round: CPU {', '.join(f'{r:.2f}' for r in cpu_ratios)} "
          f"(median {statistics.median(cpu_ratios):.2f}); wall min "
          f"{', '.join(f'{r:.2f}' for r in wall_ratios)} "
          f"(median {statistics.median(wall_ratios):.2f})")
    print(f"greedy tokens equal: {tokens[False] == tokens[True]} ({len(tokens[True])} tokens)")
    return 0


def batch_run(loaded: Any, prompt: list[int], steps: int) -> tuple[list[float], list[float],
                                                                    tuple[int, ...]]:
    """One greedy request through a fresh ModelBatch: per-step wall and CPU ms, and tokens."""
    from mlxk2.engine.batch import GenerationRequest, ModelBatch
    from mlxk2.engine.events import Finished
    from mlxk2.engine.sampling import SamplingParams

    events: list[Any] = []
    batch = ModelBatch(loaded, max_batch=1, prompt_cache=0)
    batch.add(GenerationRequest(prompt, steps + 2, SamplingParams(temperature=0.0),
                                split_reasoning=False), events.append)
    batch.step()  # the prompt
    batch.step()
    wall, cpu = [], []
    while batch.busy:
        started, started_cpu = time.perf_counter(), time.process_time()
        batch.step()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    batch.close()
    return wall, cpu, next(e.token_ids for e in events if isinstance(e, Finished))


if __name__ == "__main__":
    raise SystemExit(main())
