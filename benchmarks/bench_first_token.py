"""Time to first token: the mlxk2 batch core against raw mlx-lm, by forward passes and time.

For each tiny demo model (bf16 and 4-bit), in one process:

* the forward passes each path runs before its first token, by input shape
  (``mlx_lm.stream_generate``; ``ModelBatch`` step by step), which machine load
  cannot change;
* time and CPU time from the call to the first token, in alternating rounds:
  ``stream_generate``, mlx-lm's bare ``BatchGenerator``, ``mlxk2.engine.generate``
  (a private batch per call, as ``run`` does, closed within the time) and a kept
  ``ModelBatch`` (as ``serve`` and chat do). Each asks for one token, so the request ends in the
  step that produces its first token, and no path does more than that.

Medians and ratios over raw are printed; CPU ratios move least under contention.

Usage: python benchmarks/bench_first_token.py [--repeat 30] [--words 1] [--models-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROMPT = "Write a short story about a cat who learns to read."


class CountingModel:
    """A model that records the input shape of each forward pass."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(tuple(inputs.shape))
        return self._model(inputs, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def forward_passes(loaded: Any, prompt: list[int]) -> tuple[list[Any], list[list[Any]]]:
    """Shapes run before the first token: raw in one list, ModelBatch per step."""
    import mlx.core as mx
    from mlx_lm import stream_generate

    from mlxk2.engine.batch import GenerationRequest, ModelBatch
    from mlxk2.engine.sampling import SamplingParams

    counting = CountingModel(loaded.model)
    next(iter(stream_generate(counting, loaded.tokenizer, mx.array(prompt), max_tokens=1)))
    raw = counting.calls
    counting = CountingModel(loaded.model)
    batch = ModelBatch(dataclasses.replace(loaded, model=counting), max_batch=1, prompt_cache=0)
    events: list[Any] = []
    batch.add(GenerationRequest(prompt, 1, SamplingParams()), events.append)
    steps = []
    while not events:
        seen = len(counting.calls)
        batch.step()
        steps.append(counting.calls[seen:])
    batch.close()
    return raw, steps


def first_token_paths(loaded: Any, prompt: list[int]) -> dict[str, Callable[[], None]]:
    """Each path, run up to (and ending with) its first token."""
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator, stream_generate
    from mlx_lm.sample_utils import make_sampler

    from mlxk2.engine.batch import GenerationRequest, ModelBatch
    from mlxk2.engine.generate import generate, run_request
    from mlxk2.engine.sampling import SamplingParams

    greedy = make_sampler()
    stop_tokens = [[t] for t in sorted(loaded.stop_token_ids)]
    bare = BatchGenerator(loaded.model, stop_tokens=stop_tokens, completion_batch_size=1,
                          prefill_batch_size=1)
    kept = ModelBatch(loaded, max_batch=1, prompt_cache=0)

    def raw() -> None:
        next(iter(stream_generate(loaded.model, loaded.tokenizer, mx.array(prompt),
                                  max_tokens=1, sampler=greedy)))

    def batch_generator() -> None:
        bare.insert([prompt], max_tokens=[1], samplers=[greedy])
        while not bare.next()[1]:
            pass

    def private_batch() -> None:
        for _ in generate(loaded, prompt, SamplingParams(), max_tokens=1):
            pass

    def kept_batch() -> None:
        for _ in run_request(kept, GenerationRequest(prompt, 1, SamplingParams())):
            pass

    return {"raw": raw, "BatchGenerator": batch_generator, "mlxk2 generate": private_batch,
            "kept ModelBatch": kept_batch}


def measure(paths: dict[str, Callable[[], None]], repeat: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds per path over alternating rounds (after a warm-up)."""
    for run in paths.values():
        run()
        run()
    wall: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeat):
        for name, run in paths.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in paths}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--words", type=int, default=1,
                        help="repeat the prompt text this many times (longer prompts)")
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args()

    from mlxk2.engine.chat import build_prompt_tokens
    from mlxk2.engine.demo import build_demo_model
    from mlxk2.engine.load import load_model

    with tempfile.TemporaryDirectory(prefix="mlxk2-bench-") as tmp:
        root = args.models_dir or Path(tmp)
        for bits in (None, 4):
            label = f"tiny-{'4bit' if bits else 'bf16'}"
            if not (root / label / "config.json").exists():
                build_demo_model(root / label, preset="tiny", quantize_bits=bits)
            loaded = load_model(root / label)
            text = " ".join([PROMPT] * args.words)
            prompt = build_prompt_tokens(loaded.tokenizer, [{"role": "user", "content": text}])
            raw_calls, steps = forward_passes(loaded, prompt)
            print(f"{label}: {len(prompt)}-token prompt")
            print(f"  forward passes before the first token, stream_generate: {raw_calls}")
            print(f"  the same, ModelBatch step by step: {steps}")
            timings = measure(first_token_paths(loaded, prompt), args.repeat)
            raw_wall, raw_cpu = timings["raw"]
            print(f"  median of {args.repeat} alternating rounds, call to first token:")
            for name, (wall, cpu) in timings.items():
                print(f"    {name:16} {wall * 1000:8.2f} ms ({wall / raw_wall:.3f}x)   "
                      f"cpu {cpu * 1000:8.2f} ms ({cpu / raw_cpu:.3f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
