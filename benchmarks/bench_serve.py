"""``mlxk2 serve`` against ``mlx_lm server`` on the same model, streaming, in one run.

For each model (a small bf16 llama with 4 layers and hidden size 256, and the
~130M-parameter ``mid`` demo model in fp32) both servers are started in turn as
real processes on 127.0.0.1, then 1, 4 and 8 concurrent streaming clients send
chat requests. Every request suppresses the end-of-sequence tokens through
``logit_bias``, so each one generates exactly ``--tokens`` tokens on both servers,
and every prompt is distinct, so a prompt cache can reuse only the chat template's
opening tokens, on either side.

Both servers stay up side by side and rounds alternate between them, so load
from other processes drifts over both alike. Reported per server and client
count, each the median over ``--repeat`` rounds: aggregate tokens/s (all tokens
over the wall time of the round), p50 and p95 time to first content token, and
the median per-stream decode rate.

Targets (small bf16 model): aggregate at 8 clients >= 2x our single-client
figure, >= mlx_lm's 8-client figure, and p50 TTFT at 8 clients below mlx_lm's.

With ``--blas``, it compares ``mlxk2 serve`` with OpenBLAS bound under MLX against
the same server with ``MLXK2_BLAS=0`` (the wheel's reference BLAS), both with
``--cpu-dtype float32`` on the same float32 model (default ``mid-fp32``, where the
matmuls dominate): ``--clients`` concurrent streaming clients, rounds alternating
between the two servers, aggregate tokens/s per round and the ratio of medians
(target on a CPU: >= 1.5x). The load average is printed before and after.

Usage: python benchmarks/bench_serve.py [--models small-bf16,mid-fp32] [--tokens 128]
       [--requests-per-client 2] [--models-dir DIR]
       python benchmarks/bench_serve.py --blas [--models mid-fp32] [--clients 8]
       [--tokens 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIENT_COUNTS = (1, 4, 8)
#: name -> (demo preset sizes, dtype); "small" is the issue's 4-layer, 256-wide model.
MODELS = {
    "small-bf16": ({"hidden_size": 256, "num_hidden_layers": 4, "intermediate_size": 512,
                    "num_attention_heads": 4, "num_key_value_heads": 4,
                    "max_position_embeddings": 2048}, "bfloat16"),
    "mid-fp32": ("mid", "float32"),
}


def build_model(root: Path, label: str) -> Path:
    from mlxk2.engine import demo

    preset, dtype = MODELS[label]
    dest = root / label
    if (dest / "config.json").exists():
        return dest
    if isinstance(preset, dict):
        # The builder takes sizes by preset name; register this benchmark's size.
        demo.PRESETS.setdefault(f"bench-{label}", preset)
        preset = f"bench-{label}"
    started = time.perf_counter()
    demo.build_demo_model(dest, preset=preset, dtype=dtype)
    print(f"built {label} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return dest


def stop_token_ids(path: Path) -> list[int]:
    config = json.loads((path / "config.json").read_text())
    ids = config.get("eos_token_id")
    return ids if isinstance(ids, list) else [ids]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    model_field: str


def start(name: str, model: Path, *extra: str, env_extra: dict[str, str] | None = None,
          ) -> Server:
    """Start ``mlxk2`` (with ``extra`` options) or ``mlx_lm`` and wait until it answers.

    ``name`` is ``mlx_lm`` or a label starting with ``mlxk2``; ``env_extra`` is added
    to the server's environment.
    """
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env_extra or {})}
    if name.startswith("mlxk2"):
        cmd = [sys.executable, "-m", "mlxk2", "serve", "--model", str(model), "--port",
               str(port), "--max-concurrency", "8", "--keep-alive", "never",
               "--log-level", "warning", *extra]
    else:
        cmd = [sys.executable, "-m", "mlx_lm", "server", "--model", str(model), "--host",
               "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return wait_until_serving(Server(name, proc, port, str(model)), 120)


def wait_until_serving(server: Server, timeout_s: float) -> Server:
    """``server`` once a short streamed request succeeds (it is loaded and warm)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}")
        try:
            stream_once(server, "warm up", 4, [])
            return server
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def stop(server: Server) -> None:
    server.proc.send_signal(signal.SIGINT)
    try:
        server.proc.wait(20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@dataclass
class Sample:
    ttft: float
    decode_s: float
    tokens: int
    started: float
    ended: float
    text: str = ""
    prompt_tokens: int = 0


def stream_once(server: Server, prompt: str | list[dict[str, str]], max_tokens: int,
                banned: list[int], extra: dict[str, object] | None = None) -> Sample:
    """One streamed chat request; ``prompt`` is a user message or the whole conversation,
    ``extra`` more request fields (``response_format``)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    body = {"model": server.model_field, "messages": messages,
            "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True},
            "logit_bias": {str(t): -100 for t in banned}, **(extra or {})}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    started = time.perf_counter()
    first = None
    tokens = None
    prompt_tokens = 0
    text: list[str] = []
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise OSError(f"{server.name}: HTTP {response.status}")
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
                prompt_tokens = chunk["usage"]["prompt_tokens"]
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                text.append(delta.get("content") or "")
                if first is None and (delta.get("content") or delta.get("reasoning_content")
                                      or delta.get("reasoning")):
                    first = time.perf_counter()
    finally:
        conn.close()
    ended = time.perf_counter()
    first = first or ended
    return Sample(first - started, ended - first, tokens or max_tokens, started, ended,
                  "".join(text), prompt_tokens)


def run_round(server: Server, clients: int, per_client: int, max_tokens: int,
              banned: list[int], tag: str) -> list[Sample]:
    samples: list[Sample] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        for request in range(per_client):
            prompt = f"[{tag} {clients}/{index}/{request}] Tell me a long story about a town."
            sample = stream_once(server, prompt, max_tokens, banned)
            with lock:
                samples.append(sample)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summarize(samples: list[Sample]) -> dict[str, float]:
    wall = max(s.ended for s in samples) - min(s.started for s in samples)
    ttfts = [s.ttft for s in samples]
    per_stream = [(s.tokens - 1) / s.decode_s for s in samples if s.decode_s > 0]
    return {
        "aggregate_tps": sum(s.tokens for s in samples) / wall,
        "ttft_p50_ms": 1000 * statistics.median(ttfts),
        "ttft_p95_ms": 1000 * percentile(ttfts, 0.95),
        "stream_tps": statistics.median(per_stream),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small-bf16,mid-fp32")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3,
                        help="Rounds per server and client count, alternating servers")
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--blas", action="store_true",
                        help="mlxk2 with OpenBLAS against mlxk2 with MLXK2_BLAS=0 instead")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (--blas)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    if args.blas:
        return compare_blas(args)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.models_dir or Path(tmp)
        for label in args.models.split(","):
            model = build_model(root, label)
            banned = stop_token_ids(model)
            servers = [start("mlxk2", model), start("mlx_lm", model)]
            try:
                for server in servers:
                    run_round(server, 2, 1, 16, banned, "warm")
                rounds: dict[str, dict[int, list[dict[str, float]]]] = {
                    s.name: {c: [] for c in CLIENT_COUNTS} for s in servers}
                for clients in CLIENT_COUNTS:
                    for repeat in range(args.repeat):
                        # Alternate servers round by round, so background load
                        # drifting over time hits both alike.
                        for server in servers if repeat % 2 == 0 else servers[::-1]:
                            samples = run_round(server, clients, args.requests_per_client,
                                                args.tokens, banned, f"{label} {repeat}")
                            rounds[server.name][clients].append(summarize(samples))
            finally:
                for server in servers:
                    stop(server)
            results = {name: {c: median_row(rows) for c, rows in by_count.items()}
                       for name, by_count in rounds.items()}
            report(label, args.tokens, args.repeat, results)
    return 0


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def compare_blas(args: argparse.Namespace) -> int:
    """mlxk2 serve with OpenBLAS and with the stock BLAS, side by side, alternating."""
    labels = args.models.split(",") if args.models != "small-bf16,mid-fp32" else ["mid-fp32"]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.models_dir or Path(tmp)
        for label in labels:
            model = build_model(root, label)
            banned = stop_token_ids(model)
            print(f"load average before: {load_average()}", file=sys.stderr)
            servers = [start(f"mlxk2 {name}", model, "--cpu-dtype", "float32",
                             env_extra={"MLXK2_BLAS": switch})
                       for name, switch in (("OpenBLAS", "1"), ("stock BLAS", "0"))]
            aggregates: dict[str, list[float]] = {s.name: [] for s in servers}
            try:
                for server in servers:
                    run_round(server, 2, 1, 8, banned, "warm")
                for repeat in range(args.repeat):
                    for server in servers if repeat % 2 == 0 else servers[::-1]:
                        samples = run_round(server, args.clients, args.requests_per_client,
                                            args.tokens, banned, f"{label} blas {repeat}")
                        aggregate = summarize(samples)["aggregate_tps"]
                        aggregates[server.name].append(aggregate)
                        print(f"round {repeat + 1} {server.name}: {aggregate:.1f} tok/s "
                              f"(load {load_average()})", file=sys.stderr)
            finally:
                for server in servers:
                    stop(server)
            medians = {name: statistics.median(v) for name, v in aggregates.items()}
            fast, slow = medians["mlxk2 OpenBLAS"], medians["mlxk2 stock BLAS"]
            print(f"\n## {label}, --cpu-dtype float32: {args.clients} streaming clients x "
                  f"{args.requests_per_client} requests x {args.tokens} tokens, median "
                  f"aggregate of {args.repeat} alternating rounds")
            for name, values in aggregates.items():
                print(f"{name:18} {medians[name]:8.1f} tok/s  (rounds: "
                      f"{', '.join(f'{v:.1f}' for v in values)})")
            per_round = [a / b for a, b in zip(aggregates["mlxk2 OpenBLAS"],
                                                aggregates["mlxk2 stock BLAS"], strict=True)]
            print(f"OpenBLAS / stock: {fast / slow:.2f}x (per round "
                  f"{', '.join(f'{r:.2f}' for r in per_round)}; target >= 1.5x); "
                  f"load average after: {load_average()}")
            sys.stdout.flush()
    return 0


def median_row(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the repeated rounds."""
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]}


def report(label: str, tokens: int, repeat: int,
           results: dict[str, dict[int, dict[str, float]]]) -> None:
    print(f"\n## {label}: {tokens} tokens per request, streaming, median of {repeat} rounds")
    print(f"{'server':8} {'clients':>7} {'agg tok/s':>10} {'TTFT p50':>10} {'TTFT p95':>10} "
          f"{'stream tok/s':>13}")
    for name, rows in results.items():
        for clients, row in rows.items():
            print(f"{name:8} {clients:>7} {row['aggregate_tps']:>10.1f} "
                  f"{row['ttft_p50_ms']:>8.0f}ms {row['ttft_p95_ms']:>8.0f}ms "
                  f"{row['stream_tps']:>13.1f}")
    ours, peer = results["mlxk2"], results["mlx_lm"]
    gain = ours[8]["aggregate_tps"] / ours[1]["aggregate_tps"]
    versus = ours[8]["aggregate_tps"] / peer[8]["aggregate_tps"]
    print(f"8-client gain over our 1 client: {gain:.2f}x (target >= 2)")
    print(f"8-client aggregate vs mlx_lm:    {versus:.2f}x (target >= 1)")
    print(f"8-client TTFT p50 vs mlx_lm:     {ours[8]['ttft_p50_ms']:.0f} ms vs "
          f"{peer[8]['ttft_p50_ms']:.0f} ms (target: lower)")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
