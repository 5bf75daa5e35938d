"""pull and clone against the local test Hub, versus huggingface_hub called directly.

Serves one model (config, tokenizer files and two safetensors shards of
``--size-mb`` in total) from ``tests.hub``, then times, alternating, each in a
fresh HF_HOME and as a subprocess (same interpreter start-up on both sides):

* ``mlxk2 pull --json`` against ``snapshot_download(repo)`` (the same cache writes);
* ``mlxk2 clone --json`` against ``snapshot_download(repo, local_dir=...)``
  (a plain folder as well, but leaving ``.cache/huggingface`` metadata in it).

Usage: python benchmarks/bench_hub.py [--size-mb 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.fixtures.hub import safetensors_bytes, tiny_model_files  # noqa: E402
from tests.hub import Hub, HubServer  # noqa: E402

REPO = "bench/model"


def model_files(size_mb: int) -> dict[str, bytes]:
    files = tiny_model_files()
    del files["model.safetensors"]
    per_shard = size_mb * 1024 * 1024 // 2 // 4
    names = [f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    for name in names:
        files[name] = safetensors_bytes(per_shard)
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {}, "weight_map": {"weight": names[0]}}).encode()
    return files


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    hub = Hub()
    hub.seed(REPO, files=model_files(args.size_mb))
    work = Path(tempfile.mkdtemp(prefix="mlxk2-bench-hub-"))
    py = sys.executable
    direct = "from huggingface_hub import snapshot_download as s; import sys; "
    cases = {
        "snapshot_download (cache)": lambda d: [py, "-c", direct + f"s('{REPO}')"],
        "mlxk2 pull --json": lambda d: [py, "-m", "mlxk2", "pull", REPO, "--json"],
        "snapshot_download (local_dir)": lambda d: [
            py, "-c", direct + f"s('{REPO}', local_dir=sys.argv[1])", str(d / "ws")],
        "mlxk2 clone --json": lambda d: [py, "-m", "mlxk2", "clone", REPO, str(d / "ws"),
                                         "--json"],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    with HubServer(hub) as server:
        names = list(cases)
        for round_ in range(args.repeat):
            for name in names[round_ % 4:] + names[:round_ % 4]:  # rotate the order
                command = cases[name]
                home = work / f"{round_}-{len(times[name])}-{abs(hash(name))}"
                home.mkdir()
                env = {**os.environ, "HF_HOME": str(home / "hf"), "HF_ENDPOINT": server.url,
                       "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                       "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                       "PYTHONPATH": str(REPO_ROOT / "src")}
                times[name].append(timed(command(home), env))
                shutil.rmtree(home)
    shutil.rmtree(work)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name:32s} median {value * 1000:8.1f} ms  (n={args.repeat})")
    print(f"pull/snapshot_download ratio  "
          f"{medians['mlxk2 pull --json'] / medians['snapshot_download (cache)']:.2f}")
    print(f"clone/local_dir ratio         "
          f"{medians['mlxk2 clone --json'] / medians['snapshot_download (local_dir)']:.2f}")


if __name__ == "__main__":
    main()
