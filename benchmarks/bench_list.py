"""list/health over a large cache versus huggingface_hub.scan_cache_dir, side by side.

Builds a cache of N models (about 15 files each: sharded safetensors with an
index, tokenizer files, a README; mixed frameworks; every 10th one corrupt),
then times, in one run and in alternating order:

* ``mlxk2 list --json`` and ``mlxk2 health --json`` as subprocesses;
* ``python -c 'scan_cache_dir(root)'`` as a subprocess (same interpreter start-up);
* ``mlxk2 --version`` against a bare ``python -c pass``.

Usage: python benchmarks/bench_list.py [--models 1000] [--repeat 5]
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

import numpy as np
from safetensors.numpy import save_file

from mlxk2.cache.layout import store_snapshot

SHARDS = 4


def build_model_folder(folder: Path, index: int) -> None:
    """One model's files; the framework and corruption vary with ``index``."""
    folder.mkdir(parents=True)
    quantized = index % 3 == 0
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
              "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 256,
              "max_position_embeddings": 2048}
    if quantized:
        config["quantization"] = {"group_size": 64, "bits": 4}
    (folder / "config.json").write_text(json.dumps(config))
    weight_map = {}
    for shard in range(1, SHARDS + 1):
        name = f"model-{shard:05d}-of-{SHARDS:05d}.safetensors"
        tensors = {f"layers.{shard}.w{j}": np.full((16, 16), index, dtype=np.float16)
                   for j in range(3)}
        save_file(tensors, str(folder / name))
        weight_map.update(dict.fromkeys(tensors, name))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": 0}}}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}))
    for name in ("special_tokens_map.json", "generation_config.json"):
        (folder / name).write_text("{}")
    (folder / "vocab.json").write_text('{"a": 0}')
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    front = "library_name: mlx" if index % 2 else "library_name: transformers"
    (folder / "README.md").write_text(f"---\n{front}\n---\n# model {index}\n")
    if index % 10 == 7:  # corrupt: a truncated shard
        shard = folder / f"model-00002-of-{SHARDS:05d}.safetensors"
        shard.write_bytes(shard.read_bytes()[:-100])


def build_cache(root: Path, count: int) -> None:
    staging = root.parent / "staging"
    for index in range(count):
        folder = staging / str(index)
        build_model_folder(folder, index)
        org = "mlx-community" if index % 2 else f"org{index % 7}"
        store_snapshot(root, f"{org}/model-{index:04d}", folder)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "hub"
        t0 = time.perf_counter()
        build_cache(root, args.models)
        print(f"built {args.models} models in {time.perf_counter() - t0:.1f}s at {root}")
        env = {**os.environ, "HF_HUB_CACHE": str(root), "HF_HUB_DISABLE_TELEMETRY": "1"}
        commands = {
            "scan_cache_dir()": [sys.executable, "-c",
                                 "import sys; from huggingface_hub import scan_cache_dir; "
                                 "scan_cache_dir(sys.argv[1])", str(root)],
            "mlxk2 list --json": [sys.executable, "-m", "mlxk2", "list", "--json"],
            "mlxk2 health --json": [sys.executable, "-m", "mlxk2", "health", "--json"],
            "python -c pass": [sys.executable, "-c", "pass"],
            "mlxk2 --version": [sys.executable, "-m", "mlxk2", "--version"],
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeat):  # interleaved, so drift hits every command alike
            for name, cmd in commands.items():
                samples[name].append(timed(cmd, env))
        med = {name: statistics.median(values) for name, values in samples.items()}
        for name, value in med.items():
            print(f"{name:22s} median {value * 1000:8.1f} ms  (n={args.repeat})")
        base = med["scan_cache_dir()"]
        print(f"list/scan ratio   {med['mlxk2 list --json'] / base:.2f}  (target <= 1.00)")
        print(f"health/scan ratio {med['mlxk2 health --json'] / base:.2f}")
        overhead = (med["mlxk2 --version"] - med["python -c pass"]) * 1000
        print(f"--version overhead over bare python: {overhead:.1f} ms  (target <= 60 ms)")


if __name__ == "__main__":
    main()
