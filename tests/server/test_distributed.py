"""``run`` and ``serve`` over two ranks of MLX's ring backend, as real processes.

Tensor parallelism is tested on a llama model (4 heads, 2 KV heads), pipeline
parallelism on a qwen2 model; both are random float32 weights, so the sums
split over ranks round like the single-process ones and greedy output is
comparable token for token. Ranks are started by ``mlx.launch`` or, where a
test kills one of them, the way ``mlx.launch`` starts them (``MLX_RANK`` and a
hostfile), so the test, not the launcher, sees how rank 0 reacts.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cli import REPO_ROOT, cli_env
from tests.server.conftest import _connection, free_port, raw_request

MLX_LAUNCH = str(Path(sys.executable).with_name("mlx.launch"))
PROMPT = "Once upon a time"
#: Six streams: lengths, stop strings and seeds all differ.
STREAMS = [
    {"prompt": "Once upon a time", "max_tokens": 12, "seed": 1},
    {"prompt": "The quick brown fox", "max_tokens": 30, "seed": 2},
    {"prompt": "Hello there", "max_tokens": 7, "stop": [" the"], "seed": 3},
    {"prompt": "In the beginning", "max_tokens": 24, "stop": ["e"], "seed": 4},
    {"prompt": "A B C D", "max_tokens": 40, "seed": 5},
    {"prompt": "Tokens and more tokens", "max_tokens": 18, "stop": ["\n"], "seed": 6},
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from mlxk2.engine.demo import build_demo_model

    root = tmp_path_factory.mktemp("dist-models")
    return {arch: build_demo_model(root / arch, dtype="float32", architecture=arch,
                                   chat_template=False)
            for arch in ("llama", "qwen2")}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return cli_env(tmp_path_factory.mktemp("dist-home"))


def _mlxk2() -> list[str]:
    return [sys.executable, "-m", "mlxk2"]


def _run_args(model: Path) -> list[str]:
    return ["run", str(model), PROMPT, "--max-tokens", "24", "--no-chat-template", "--json"]


@pytest.mark.parametrize(("arch", "parallel"), [("llama", "tensor"), ("qwen2", "pipeline")])
def test_distributed_run_equals_single_process_run(models, env, arch, parallel):
    single = subprocess.run([*_mlxk2(), *_run_args(models[arch])], env=env, capture_output=True,
                            text=True, timeout=120)
    assert single.returncode == 0, single.stderr
    launched = subprocess.run(
        [MLX_LAUNCH, "-n", "2", "--backend", "ring", "--starting-port", str(free_port()), "--",
         *_mlxk2(), *_run_args(models[arch]), "--distributed", "--parallel", parallel],
        env=env, capture_output=True, text=True, timeout=120)
    # mlx.launch exits 0 whatever its ranks do; rank 0's JSON is the verdict.
    doc = json.loads(launched.stdout)
    assert doc["status"] == "success", launched.stderr
    assert doc["data"]["response"] == json.loads(single.stdout)["data"]["response"]
    assert doc["data"]["usage"] == json.loads(single.stdout)["data"]["usage"]


def test_a_model_that_cannot_be_split_is_refused_before_loading(models, env):
    launched = subprocess.run(
        [MLX_LAUNCH, "-n", "2", "--backend", "ring", "--starting-port", str(free_port()), "--",
         *_mlxk2(), *_run_args(models["llama"]), "--distributed", "--parallel", "pipeline"],
        env=env, capture_output=True, text=True, timeout=120)
    doc = json.loads(launched.stdout)
    assert doc["error"]["type"] == "model_incompatible"
    assert "pipeline" in doc["error"]["message"]


# -- serve ---------------------------------------------------------------------------


@dataclass
class Cluster:
    """Ranks of one ``serve --distributed`` and rank 0's URL."""

    ranks: list[subprocess.Popen[bytes]]
    url: str
    logs: list[Path]

    def log(self) -> str:
        return "\n".join(f"--- rank {i}\n{p.read_text()}" for i, p in enumerate(self.logs))

    def stop(self) -> None:
        for proc in self.ranks:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _start_ranks(args: list[str], env: dict[str, str], tmp: Path,
                 addresses: list[str] | None = None,
                 wrappers: list[list[str]] | None = None) -> Cluster:
    """Start one process per rank as ``mlx.launch`` does: ``MLX_RANK`` and a ring hostfile."""
    addresses = addresses or ["127.0.0.1", "127.0.0.1"]
    hostfile = tmp / "hosts.json"
    hostfile.write_text(json.dumps([[f"{a}:{free_port()}"] for a in addresses]))
    port = free_port()
    ranks, logs = [], []
    for rank in range(len(addresses)):
        log = tmp / f"rank{rank}.log"
        logs.append(log)
        prefix = wrappers[rank] if wrappers else []
        ranks.append(subprocess.Popen(
            [*prefix, "env", f"MLX_RANK={rank}", f"MLX_HOSTFILE={hostfile}",
             *_mlxk2(), "serve", *args, "--distributed", "--port", str(port),
             "--host", "0.0.0.0" if wrappers else "127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=log.open("w")))
    return Cluster(ranks, f"http://{addresses[0] if wrappers else '127.0.0.1'}:{port}", logs)


def _wait_healthy(cluster: Cluster, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        assert all(p.poll() is None for p in cluster.ranks), cluster.log()
        try:
            response = raw_request(cluster.url, "GET", "/health")
            if response.status == 200:
                return response.json()
        except OSError:
            pass
        assert time.monotonic() < deadline, "distributed server did not come up\n" + cluster.log()
        time.sleep(0.2)


def _single_server(model: Path, env: dict[str, str], tmp: Path) -> Cluster:
    port = free_port()
    log = tmp / "single.log"
    proc = subprocess.Popen([*_mlxk2(), "serve", "--model", str(model), "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    return Cluster([proc], f"http://127.0.0.1:{port}", [log])


def _complete(url: str, body: dict[str, Any]) -> tuple[list[str], Any]:
    """A streamed completion: its text pieces, and the finish reason (or error event)."""
    conn = _connection(url)
    conn.request("POST", "/v1/completions", json.dumps({**body, "stream": True}),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    pieces, end = [], None
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            end = chunk["error"]
            break
        choice = chunk["choices"][0]
        pieces.append(choice["text"])
        end = choice["finish_reason"] or end
    conn.close()
    return pieces, end


def _workload(url: str) -> list[tuple[list[str], Any]]:
    with concurrent.futures.ThreadPoolExecutor(len(STREAMS)) as pool:
        return list(pool.map(lambda body: _complete(url, body), STREAMS))


@pytest.mark.parametrize(("arch", "parallel"), [("llama", "tensor"), ("qwen2", "pipeline")])
def test_distributed_serve_equals_single_process_serve(models, env, tmp_path, arch, parallel):
    single = _single_server(models[arch], env, tmp_path)
    cluster = _start_ranks(["--model", str(models[arch]), "--parallel", parallel], env, tmp_path)
    try:
        health = _wait_healthy(cluster)
        assert health["distributed"]["world_size"] == 2
        assert health["distributed"]["parallel"] == parallel
        assert health["distributed"]["backend"] == "ring"
        _wait_healthy(single)
        one = {"prompt": PROMPT, "max_tokens": 30}
        assert _complete(cluster.url, one) == _complete(single.url, one)
        distributed, alone = _workload(cluster.url), _workload(single.url)
        assert distributed == alone
        assert len({len(pieces) for pieces, _ in alone}) > 2  # the streams really differ
    finally:
        cluster.stop()
        single.stop()


def test_rank_one_killed_mid_stream_makes_rank_zero_answer_503_and_exit(models, env, tmp_path):
    cluster = _start_ranks(["--model", str(models["llama"]), "--rank-timeout", "10"], env,
                           tmp_path)
    try:
        _wait_healthy(cluster)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            stream = pool.submit(_complete, cluster.url, {"prompt": PROMPT, "max_tokens": 1500})
            time.sleep(1.0)
            assert not stream.done()
            cluster.ranks[1].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            _, end = stream.result(timeout=30)
        assert isinstance(end, dict) and end["code"] == "rank_lost", end
        status = raw_request(cluster.url, "GET", "/health").status
        assert status == 503
        assert time.monotonic() - killed < 30
        code = cluster.ranks[0].wait(30)
        assert code != 0
    finally:
        cluster.stop()


def test_sigterm_to_rank_zero_stops_every_rank_cleanly(models, env, tmp_path):
    cluster = _start_ranks(["--model", str(models["qwen2"]), "--shutdown-grace", "0"], env,
                           tmp_path)
    try:
        _wait_healthy(cluster)
        cluster.ranks[0].send_signal(signal.SIGTERM)
        assert cluster.ranks[0].wait(30) == 0, cluster.log()
        assert cluster.ranks[1].wait(30) == 0, cluster.log()
    finally:
        cluster.stop()


# -- two hosts -----------------------------------------------------------------------


@pytest.fixture
def two_namespaces() -> Iterator[list[str]]:
    """Two network namespaces joined by a veth pair, one address in each."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("network namespaces need root and iproute2 (ip)")
    suffix = str(os.getpid())[-5:]
    names = [f"mlxk2a{suffix}", f"mlxk2b{suffix}"]
    addresses = ["10.231.7.1", "10.231.7.2"]
    commands = [
        ["ip", "netns", "add", names[0]], ["ip", "netns", "add", names[1]],
        ["ip", "link", "add", f"va{suffix}", "type", "veth", "peer", "name", f"vb{suffix}"],
        ["ip", "link", "set", f"va{suffix}", "netns", names[0]],
        ["ip", "link", "set", f"vb{suffix}", "netns", names[1]],
    ]
    for name, veth, address in zip(names, (f"va{suffix}", f"vb{suffix}"), addresses, strict=True):
        commands += [
            ["ip", "-n", name, "addr", "add", f"{address}/24", "dev", veth],
            ["ip", "-n", name, "link", "set", veth, "up"],
            ["ip", "-n", name, "link", "set", "lo", "up"],
        ]
    try:
        for command in commands:
            made = subprocess.run(command, capture_output=True, text=True)
            if made.returncode != 0:
                pytest.skip(f"this machine forbids network namespaces: {made.stderr.strip()}")
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_two_hosts_in_network_namespaces_serve_like_one(models, env, tmp_path, two_namespaces):
    addresses = ["10.231.7.1", "10.231.7.2"]
    wrappers = [["ip", "netns", "exec", name] for name in two_namespaces]
    cluster = _start_ranks(["--model", str(models["qwen2"]), "--shutdown-grace", "0"], env,
                           tmp_path, addresses=addresses, wrappers=wrappers)
    reference = _single_server(models["qwen2"], env, tmp_path)
    try:
        health = _wait_healthy_in(two_namespaces[0], cluster)
        assert [r["addresses"][0].split(":")[0] for r in health["distributed"]["ranks"]] \
            == addresses
        _wait_healthy(reference)
        one = {"prompt": PROMPT, "max_tokens": 20}
        expected = _complete(reference.url, one)
        got = subprocess.run(
            ["ip", "netns", "exec", two_namespaces[0], sys.executable, "-c", _CLIENT,
             cluster.url, json.dumps(one)],
            env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
        assert json.loads(got.stdout) == [expected[0], expected[1]], got.stderr
        cluster.ranks[0].send_signal(signal.SIGTERM)
        assert cluster.ranks[0].wait(30) == 0, cluster.log()
        assert cluster.ranks[1].wait(30) == 0, cluster.log()
    finally:
        cluster.stop()
        reference.stop()


#: Rank 0 listens inside its namespace, so its client runs there too.
_CLIENT = """
import json, sys
from tests.server.test_distributed import _complete
print(json.dumps(list(_complete(sys.argv[1], json.loads(sys.argv[2])))))
"""


_HEALTH = """
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1] + "/health", timeout=5).read().decode())
"""


def _wait_healthy_in(namespace: str, cluster: Cluster, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        assert all(p.poll() is None for p in cluster.ranks), cluster.log()
        probe = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", _HEALTH, cluster.url],
            capture_output=True, text=True)
        if probe.returncode == 0:
            health: dict[str, Any] = json.loads(probe.stdout)
            return health
        assert time.monotonic() < deadline, "distributed server did not come up\n" + cluster.log()
        time.sleep(0.3)
