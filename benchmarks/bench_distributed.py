"""``mlxk2 serve`` in one process against ``serve --distributed`` on 2 loopback ranks, in one run.

Both servers load the same random-weight model (by default the ~130M-parameter
``mid`` demo llama in float32, where compute dominates a decode step), stay up
side by side, and take rounds in turn of 1 and of 8 concurrent streaming
clients; every request bans the end-of-sequence tokens, so each generates
exactly ``--tokens`` tokens. The 2 ranks run with tensor parallelism
(``--parallel``), started the way ``mlx.launch -n 2 --backend ring`` starts
them (``MLX_RANK`` and a ring ``MLX_HOSTFILE``) but without its output relay,
which busy-polls a core on this host for as long as the job runs;
``--launcher mlx.launch`` runs the real launcher, relay included.

On one machine the ranks share its cores and talk over loopback, so this
measures the cost of the distributed path (sharing each decision, two
``all_sum`` per layer per step), not what several Macs gain.

Reported per server and client count, each the median over ``--repeat``
rounds: aggregate tokens/s, p50 time to first token and the per-stream rate,
then the ratio distributed / single.

Usage: python benchmarks/bench_distributed.py [--model mid-fp32] [--tokens 32]
       [--requests-per-client 1] [--repeat 2] [--parallel tensor] [--models-dir DIR]
       [--launcher ranks|mlx.launch]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_serve import (
    REPO,
    Server,
    build_model,
    free_port,
    median_row,
    run_round,
    stop_token_ids,
    summarize,
    wait_until_serving,
)

CLIENT_COUNTS = (1, 8)
MLX_LAUNCH = str(Path(sys.executable).with_name("mlx.launch"))


def start(name: str, model: Path, parallel: str, launcher: str, tmp: Path) -> Server:
    """Start one server (``single`` or ``distributed``) and wait until it answers."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    serve = [sys.executable, "-m", "mlxk2", "serve", "--model", str(model), "--port", str(port),
             "--max-concurrency", "8", "--keep-alive", "never", "--log-level", "warning"]
    distributed = [*serve, "--distributed", "--parallel", parallel]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if name == "distributed" and launcher == "ranks":
        # What mlx.launch gives each rank; rank 1 joins rank 0's process group,
        # so stopping signals both, as Ctrl-C in a terminal would.
        hostfile = tmp / "ring-hosts.json"
        hostfile.write_text(json.dumps([[f"127.0.0.1:{free_port()}"] for _ in range(2)]))
        ranks = [{**env, "MLX_RANK": str(rank), "MLX_HOSTFILE": str(hostfile)}
                 for rank in range(2)]
        proc = subprocess.Popen(distributed, env=ranks[0], process_group=0, **quiet)
        subprocess.Popen(distributed, env=ranks[1], process_group=proc.pid, **quiet)
    else:
        cmd = serve
        if name == "distributed":
            cmd = [MLX_LAUNCH, "-n", "2", "--backend", "ring", "--starting-port",
                   str(free_port()), "--", *distributed]
        # A new session, so stopping signals the launcher and its local ranks together;
        # stdin stays an open pipe, since mlx.launch spins on a closed one.
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, start_new_session=True,
                                **quiet)
    return wait_until_serving(Server(name, proc, port, str(model)), 300)


def stop(server: Server) -> None:
    """Ctrl-C to the whole group, as a terminal would send it; rank 0 then stops the others."""
    os.killpg(server.proc.pid, signal.SIGINT)
    try:
        server.proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mid-fp32", help="A model label of bench_serve")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--requests-per-client", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2,
                        help="Rounds per server and client count, alternating servers")
    parser.add_argument("--parallel", choices=("tensor", "pipeline"), default="tensor")
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--launcher", choices=("ranks", "mlx.launch"), default="ranks",
                        help="Start the 2 ranks directly (default) or through mlx.launch")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))

    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args.models_dir or Path(tmp), args.model)
        banned = stop_token_ids(model)
        servers = []
        try:
            for name in ("single", "distributed"):
                servers.append(start(name, model, args.parallel, args.launcher, Path(tmp)))
            for server in servers:
                run_round(server, 2, 1, 8, banned, "warm")
            rounds: dict[str, dict[int, list[dict[str, float]]]] = {
                s.name: {c: [] for c in CLIENT_COUNTS} for s in servers}
            for clients in CLIENT_COUNTS:
                for repeat in range(args.repeat):
                    for server in servers if repeat % 2 == 0 else servers[::-1]:
                        samples = run_round(server, clients, args.requests_per_client,
                                            args.tokens, banned, f"{repeat}")
                        rounds[server.name][clients].append(summarize(samples))
        finally:
            for server in servers:
                stop(server)
    results = {name: {c: median_row(rows) for c, rows in by_count.items()}
               for name, by_count in rounds.items()}
    print(f"\n## {args.model}, {args.parallel} parallel over 2 loopback ranks "
          f"({args.launcher}): {args.tokens} tokens per request, streaming, "
          f"median of {args.repeat} rounds")
    print(f"{'server':12} {'clients':>7} {'agg tok/s':>10} {'TTFT p50':>10} {'stream tok/s':>13}")
    for name, rows in results.items():
        for clients, row in rows.items():
            print(f"{name:12} {clients:>7} {row['aggregate_tps']:>10.1f} "
                  f"{row['ttft_p50_ms']:>8.0f}ms {row['stream_tps']:>13.1f}")
    for clients in CLIENT_COUNTS:
        ratio = (results["distributed"][clients]["aggregate_tps"]
                 / results["single"][clients]["aggregate_tps"])
        print(f"{clients} client(s): distributed / single aggregate tok/s = {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
