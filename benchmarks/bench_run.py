"""``mlxk2 run`` against raw mlx-lm on the same model and prompt, side by side.

For each demo model (tiny and mid, bf16 and 4-bit, built by ``mlxk2 demo``'s
generator) this measures, in one run:

* decode tokens/s and time to first token after the model is loaded: the
  mlxk2 engine (``mlxk2.engine.generate``) against ``mlx_lm.stream_generate``,
  same prompt tokens, greedy, stop tokens suppressed so both produce exactly
  ``--tokens`` tokens; runs alternate;
* whole-command wall time: ``python -m mlxk2 run PATH PROMPT`` against
  ``python -m mlx_lm generate --model PATH --prompt PROMPT`` (imports, load,
  chat template, generation, exit);
* which top-level packages ``mlxk2 run`` imports that a plain mlx-lm
  load-and-generate does not.

Contention from other processes only slows runs down, so the table shows the
best of the alternating runs (fastest decode, lowest TTFT and wall time), with
median ratios alongside, and a CPU-time ratio (raw CPU seconds over mlxk2's for
the same generation, median), which contention barely moves.

Targets: decode ratio >= 0.95, TTFT at most 50 ms over raw, no extra heavy imports.

Usage: python benchmarks/bench_run.py [--presets tiny,mid] [--tokens 128] [--repeat 5]
       [--models-dir DIR]  (keeps the built models between runs)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "Write a short story about a cat who learns to read."
HEAVY = ("torch", "fastapi", "uvicorn", "starlette", "pydantic", "prometheus_client", "openai",
         "tensorflow", "jax", "pandas", "scipy", "sklearn")


def build_models(root: Path, presets: list[str]) -> dict[str, Path]:
    from mlxk2.engine.demo import build_demo_model

    models = {}
    for preset in presets:
        for bits in (None, 4):
            label = f"{preset}-{'4bit' if bits else 'bf16'}"
            dest = root / label
            if not (dest / "config.json").exists():
                started = time.perf_counter()
                build_demo_model(dest, preset=preset, quantize_bits=bits)
                print(f"built {label} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
            models[label] = dest
    return models


def count_params(model) -> int:
    """Stored parameters (packed 4-bit weights count as their uint32 words, so the
    table shows each preset's unquantised count)."""
    from mlx.utils import tree_flatten

    return sum(v.size for _, v in tree_flatten(model.parameters()))


def measure_engine(path: Path, tokens: int, repeat: int) -> dict[str, float]:
    """TTFT, decode rate and CPU time of raw mlx-lm and the mlxk2 engine, alternating."""
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    from mlxk2.engine.chat import build_prompt_tokens
    from mlxk2.engine.events import Finished
    from mlxk2.engine.generate import generate
    from mlxk2.engine.load import load_model
    from mlxk2.engine.sampling import SamplingParams

    loaded = load_model(path)
    prompt = build_prompt_tokens(loaded.tokenizer, [{"role": "user", "content": PROMPT}])
    no_stop = {i: -1e9 for i in loaded.stop_token_ids}
    params = SamplingParams(logit_bias=no_stop)

    def raw() -> tuple[float, float, int]:
        import mlx.core as mx

        started = time.perf_counter()
        first = last = started
        count = 0
        for _ in stream_generate(loaded.model, loaded.tokenizer, mx.array(prompt),
                                 max_tokens=tokens, sampler=make_sampler(),
                                 logits_processors=make_logits_processors(logit_bias=no_stop)):
            last = time.perf_counter()
            if count == 0:
                first = last
            count += 1
        return first - started, (count - 1) / (last - first), count

    def ours() -> tuple[float, float, int]:
        started = time.perf_counter()
        first = last = finished_at = None
        done = None
        for event in generate(loaded, prompt, params, max_tokens=tokens):
            now = time.perf_counter()
            if isinstance(event, Finished):
                done, finished_at = event, now
                continue
            first = first or now
            last = now
        assert done is not None and first is not None and last is not None
        assert finished_at is not None
        # Chunks can lag a token behind (held-back text), so time by the engine's own
        # token clock, which starts when the request joins its batch: shift it to this
        # call, so that setting up the batch counts, as setting up counts for raw.
        ttft = finished_at - done.generation_s - started + done.ttft_s
        return ttft, (done.completion_tokens - 1) / (last - started - ttft), \
            done.completion_tokens

    raw()  # warm-up: kernel compilation and caches
    ours()
    results: dict[str, list[float]] = {f"{side}_{what}": [] for side in ("raw", "our")
                                       for what in ("ttft", "tps", "cpu")}
    for _ in range(repeat):
        for name, fn in (("raw", raw), ("our", ours)):
            cpu = time.process_time()
            ttft, tps, count = fn()
            results[f"{name}_cpu"].append(time.process_time() - cpu)
            assert count == tokens, f"{name} produced {count} tokens, wanted {tokens}"
            results[f"{name}_ttft"].append(ttft)
            results[f"{name}_tps"].append(tps)
    # Other work on the machine only ever slows a run down, so the best run is
    # the least noisy estimate; the medians are kept for the record.
    summary = {k: (max(v) if k.endswith("tps") else min(v)) for k, v in results.items()}
    summary.update({f"median_{k}": statistics.median(v) for k, v in results.items()})
    summary["params_m"] = count_params(loaded.model) / 1e6
    summary["prompt_tokens"] = len(prompt)
    return summary


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure_wall(path: Path, tokens: int, repeat: int, env: dict[str, str]) -> dict[str, float]:
    ours = [sys.executable, "-m", "mlxk2", "run", str(path), PROMPT, "--max-tokens", str(tokens)]
    raw = [sys.executable, "-m", "mlx_lm", "generate", "--model", str(path), "--prompt", PROMPT,
           "--max-tokens", str(tokens)]
    _wall(ours, env)
    _wall(raw, env)
    timings: dict[str, list[float]] = {"raw_wall": [], "our_wall": []}
    for _ in range(repeat):
        timings["raw_wall"].append(_wall(raw, env))
        timings["our_wall"].append(_wall(ours, env))
    return {k: min(v) for k, v in timings.items()}


_MODULES_SNIPPET = """
import json, sys
{body}
print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))
"""


def extra_imports(path: Path, env: dict[str, str]) -> list[str]:
    """Top-level packages ``mlxk2 run`` loads beyond a plain mlx-lm load + generate."""
    ours = _MODULES_SNIPPET.format(body=(
        "import io, contextlib\nfrom mlxk2.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main(['run', {str(path)!r}, 'hi', '--max-tokens', '2'])"
    ))
    raw = _MODULES_SNIPPET.format(body=(
        "import mlx_lm\n"
        f"m, t = mlx_lm.load({str(path)!r})\n"
        "mlx_lm.generate(m, t, t.apply_chat_template([{'role': 'user', 'content': 'hi'}],"
        " add_generation_prompt=True), max_tokens=2)"
    ))
    found = []
    for snippet in (ours, raw):
        out = subprocess.run([sys.executable, "-c", snippet], env=env, check=True,
                             capture_output=True, text=True).stdout
        found.append(set(json.loads(out.strip().splitlines()[-1])))
    return sorted(found[0] - found[1])


def _row(cells: tuple[str, ...]) -> str:
    return " ".join(c.ljust(10) if i == 0 else c.rjust(9) for i, c in enumerate(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="tiny,mid")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per run, tiny models")
    parser.add_argument("--mid-tokens", type=int, default=16,
                        help="tokens per run, mid models (slow on CPU, 4-bit especially)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--wall-repeat", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mlxk2-bench-") as tmp:
        root = args.models_dir or Path(tmp)
        models = build_models(root, args.presets.split(","))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1",
               "HF_HOME": str(Path(tmp) / "hf_home")}
        print(f"prompt: {PROMPT!r}; greedy; best of {args.repeat} (engine) and "
              f"{args.wall_repeat} (wall) alternating runs; python {sys.version.split()[0]}")
        columns = ("model", "params", "tokens", "raw tok/s", "mlxk2", "ratio", "med.ratio",
                   "cpu ratio", "raw ttft", "mlxk2", "delta", "med.delta", "raw wall", "mlxk2",
                   "ratio")
        print(_row(columns))
        params_m: dict[str, float] = {}  # per preset, from the unquantised model
        for label, path in models.items():
            preset = label.split("-")[0]
            tokens = args.tokens if preset == "tiny" else args.mid_tokens
            e = measure_engine(path, tokens, args.repeat)
            params_m.setdefault(preset, e["params_m"])
            w = measure_wall(path, tokens, args.wall_repeat, env)
            print(_row((
                label, f"{params_m[preset]:.1f}M", str(tokens),
                f"{e['raw_tps']:.1f}", f"{e['our_tps']:.1f}", f"{e['our_tps'] / e['raw_tps']:.3f}",
                f"{e['median_our_tps'] / e['median_raw_tps']:.3f}",
                f"{e['median_raw_cpu'] / e['median_our_cpu']:.3f}",
                f"{e['raw_ttft'] * 1000:.1f}ms", f"{e['our_ttft'] * 1000:.1f}ms",
                f"{(e['our_ttft'] - e['raw_ttft']) * 1000:+.1f}ms",
                f"{(e['median_our_ttft'] - e['median_raw_ttft']) * 1000:+.1f}ms",
                f"{w['raw_wall']:.2f}s", f"{w['our_wall']:.2f}s",
                f"{w['our_wall'] / w['raw_wall']:.3f}",
            )), flush=True)
        extra = extra_imports(next(iter(models.values())), env)
        heavy = [m for m in extra if m in HEAVY]
        print(f"packages mlxk2 run imports beyond raw mlx-lm: {', '.join(extra) or 'none'}")
        print(f"heavy among them: {', '.join(heavy) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
