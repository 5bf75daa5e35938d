"""Constrained decoding in the continuous batch: 8 clients, half with a ``json_schema``,
against 8 free-text clients, on one ``mlxk2 serve`` process in one run.

Rounds alternate between the two mixes so background load drifts over both alike.
Every request generates exactly ``--tokens`` tokens: free-text requests ban the
end-of-sequence tokens through ``logit_bias``, and the schema's one string has a
``minLength`` longer than the reply, so the grammar never lets it close. Reported
per mix, each the median over ``--repeat`` rounds: aggregate tokens/s and p50 time
to first token; then the ratio (goal: at most 15% lower throughput).

A second, in-process part measures what the grammar costs per decode step: the
same batch of 8 rows (4 constrained) stepped through ``ModelBatch``, with the time
spent in the mask (llguidance's bitmask plus applying it) read from the batch.

Usage: python benchmarks/bench_structured.py [--model small-bf16] [--tokens 128]
       [--requests-per-client 2] [--repeat 3] [--models-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_serve import (
    REPO,
    Sample,
    Server,
    build_model,
    median_row,
    start,
    stop,
    stop_token_ids,
    stream_once,
    summarize,
)

CLIENTS = 8
SCHEMA = {"type": "object", "properties": {"story": {"type": "string", "minLength": 4000}},
          "required": ["story"]}


def run_round(server: Server, constrained: int, per_client: int, max_tokens: int,
              banned: list[int], tag: str) -> list[Sample]:
    """:data:`CLIENTS` concurrent clients, the first ``constrained`` with the schema."""
    samples: list[Sample] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        for request in range(per_client):
            prompt = f"[{tag} {index}/{request}] Tell me a long story about a town."
            if index < constrained:  # the schema alone decides when the answer ends
                sample = stream_once(server, prompt, max_tokens, [], {"response_format": {
                    "type": "json_schema", "json_schema": {"name": "story", "schema": SCHEMA}}})
            else:
                sample = stream_once(server, prompt, max_tokens, banned)
            with lock:
                samples.append(sample)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples


def mask_cost(model: Path, tokens: int) -> dict[str, float]:
    """Per-step time of an 8-row batch with 4 constrained rows, and the mask's share."""
    from mlxk2.engine.batch import GenerationRequest, ModelBatch
    from mlxk2.engine.chat import build_prompt_tokens
    from mlxk2.engine.constraints import ConstraintSpec
    from mlxk2.engine.load import load_model
    from mlxk2.engine.sampling import SamplingParams

    loaded = load_model(model)
    spec = ConstraintSpec.json_schema(SCHEMA)
    batch = ModelBatch(loaded, max_batch=CLIENTS, prompt_cache=0)
    for i in range(CLIENTS):
        prompt = build_prompt_tokens(loaded.tokenizer,
                                     [{"role": "user", "content": f"Story {i} about a town."}])
        batch.add(GenerationRequest(prompt, tokens, SamplingParams(),
                                    constraint=spec if i < CLIENTS // 2 else None),
                  lambda event: None)
    steps = 0
    started = time.perf_counter()
    while batch.busy:
        batch.step()
        steps += 1
    elapsed = time.perf_counter() - started
    per_row = batch.mask_s / max(batch.mask_steps, 1)
    per_step = batch.mask_s / steps
    batch.close()
    return {"step_ms": 1000 * elapsed / steps, "mask_ms_per_row": 1000 * per_row,
            "mask_ms_per_step": 1000 * per_step, "vocab": float(len(loaded.tokenizer))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small-bf16")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))

    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args.models_dir or Path(tmp), args.model)
        banned = stop_token_ids(model)
        server = start("mlxk2", model)
        mixes = {"free x8": 0, "schema x4 + free x4": CLIENTS // 2}
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in mixes}
        try:
            run_round(server, CLIENTS // 2, 1, 16, banned, "warm")
            for repeat in range(args.repeat):
                order = list(mixes.items())
                for name, constrained in order if repeat % 2 == 0 else order[::-1]:
                    samples = run_round(server, constrained, args.requests_per_client,
                                        args.tokens, banned, f"{repeat} {name}")
                    if any(s.tokens != args.tokens for s in samples):
                        raise RuntimeError(f"{name}: a request ended before {args.tokens} "
                                           "tokens, so the rounds would not compare")
                    rounds[name].append(summarize(samples))
        finally:
            stop(server)
        cost = mask_cost(model, args.tokens)

    results = {name: median_row(rows) for name, rows in rounds.items()}
    print(f"\n## {args.model}: {CLIENTS} clients, {args.tokens} tokens per request, "
          f"streaming, median of {args.repeat} rounds")
    print(f"{'mix':22} {'agg tok/s':>10} {'TTFT p50':>10}")
    for name, row in results.items():
        print(f"{name:22} {row['aggregate_tps']:>10.1f} {row['ttft_p50_ms']:>8.0f}ms")
    free, mixed = results["free x8"], results["schema x4 + free x4"]
    ratio = mixed["aggregate_tps"] / free["aggregate_tps"]
    print(f"throughput with schemas / free: {ratio:.2f} (goal >= 0.85)")
    print(f"grammar mask, in process (vocab {cost['vocab']:.0f}): "
          f"{cost['mask_ms_per_row']:.3f} ms per constrained row per step, "
          f"{cost['mask_ms_per_step']:.3f} ms of a {cost['step_ms']:.2f} ms decode step "
          f"(4 of 8 rows constrained)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
