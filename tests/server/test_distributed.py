"""``run`` and ``serve`` over two ranks of MLX's ring backend, as real processes.

Tensor parallelism is tested on a llama model (4 heads, 2 KV heads), pipeline
parallelism on a qwen2 model; both are random float32 weights, so the sums
split over ranks round like the single-process ones and greedy output is
comparable token for token. Ranks are started the way ``mlx.launch`` starts
them (``MLX_RANK`` and a ring hostfile), so a test can signal each rank and
see its exit code, and no launcher relay busy-polls the cores; ``serve
--hostfile`` runs the real ``mlx.launch``.

Starting a process (importing MLX, mlx-lm and transformers) is what these
tests spend their time on, so the single-process references run in this
process (``run`` through the CLI's ``main``, ``serve`` as an in-process server)
and each cluster serves every test that leaves it running before one ends it.
At most one cluster is up at a time: an idle follower waits for rank 0 inside
the ring backend's receive, which polls its socket and takes a core's share.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cli import REPO_ROOT, cli_env, run_inprocess
from tests.fixtures.server import LiveServer, connection, free_port, raw_request

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


def _ring_hostfile(tmp: Path, addresses: list[str]) -> Path:
    """The ``MLX_HOSTFILE`` that ``mlx.launch`` writes for the ring backend."""
    hostfile = Path(tempfile.mkdtemp(dir=tmp)) / "hosts.json"
    hostfile.write_text(json.dumps([[f"{a}:{free_port()}"] for a in addresses]))
    return hostfile


def _rank_command(rank: int, hostfile: Path, args: list[str]) -> list[str]:
    """What ``mlx.launch`` runs for ``rank`` (without its output relay, which busy-polls)."""
    return ["env", f"MLX_RANK={rank}", f"MLX_HOSTFILE={hostfile}", *_mlxk2(), *args]


@dataclass
class Job:
    """Processes running in the background (one per rank), their output in files."""

    procs: list[subprocess.Popen[bytes]]
    outs: list[Path]
    errs: list[Path]

    def result(self, timeout: float = 180) -> tuple[str, str]:
        """Rank 0's stdout and every rank's stderr, once all have exited."""
        for proc in self.procs:
            proc.wait(timeout)
        return self.outs[0].read_text(), "\n".join(e.read_text() for e in self.errs)


def _start_job(commands: list[list[str]], env: dict[str, str], tmp: Path, name: str) -> Job:
    outs = [tmp / f"{name}-{i}.out" for i in range(len(commands))]
    errs = [tmp / f"{name}-{i}.err" for i in range(len(commands))]
    procs = [subprocess.Popen(command, env=env, stdout=out.open("w"), stderr=err.open("w"))
             for command, out, err in zip(commands, outs, errs, strict=True)]
    return Job(procs, outs, errs)


def _two_ranks(tmp: Path, args: list[str], parallel: str) -> list[list[str]]:
    hostfile = _ring_hostfile(tmp, ["127.0.0.1", "127.0.0.1"])
    return [_rank_command(rank, hostfile, [*args, "--distributed", "--parallel", parallel])
            for rank in range(2)]


@pytest.fixture(scope="module")
def runs(models, env, tmp_path_factory) -> Iterator[dict[str, Job]]:
    """Every distributed ``run`` of this module, started together: they only read the models."""
    tmp = tmp_path_factory.mktemp("dist-runs")
    commands = {
        "llama-tensor": _two_ranks(tmp, [*_run_args(models["llama"]), "--verbose"], "tensor"),
        "qwen2-pipeline": _two_ranks(tmp, _run_args(models["qwen2"]), "pipeline"),
        "llama-pipeline": _two_ranks(tmp, _run_args(models["llama"]), "pipeline"),
    }
    jobs = {name: _start_job(command, env, tmp, name) for name, command in commands.items()}
    # The suite runs on the stock BLAS (MLXK2_BLAS=0); this job binds OpenBLAS, as users get.
    with_blas = {k: v for k, v in env.items() if k != "MLXK2_BLAS"}
    jobs["llama-tensor-openblas"] = _start_job(
        _two_ranks(tmp, [*_run_args(models["llama"]), "--verbose"], "tensor"), with_blas, tmp,
        "llama-tensor-openblas")
    yield jobs
    for job in jobs.values():
        for proc in job.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.mark.parametrize(("arch", "parallel"), [("llama", "tensor"), ("qwen2", "pipeline")])
def test_distributed_run_equals_single_process_run(runs, models, arch, parallel):
    single = run_inprocess(*_run_args(models[arch]))
    assert single.code == 0, single.stderr
    stdout, stderr = runs[f"{arch}-{parallel}"].result()
    doc = json.loads(stdout)
    assert doc["status"] == "success", stderr
    assert [p.returncode for p in runs[f"{arch}-{parallel}"].procs] == [0, 0], stderr
    assert doc["data"]["response"] == single.json["data"]["response"]
    assert doc["data"]["usage"] == single.json["data"]["usage"]


def test_a_model_that_cannot_be_split_is_refused_before_loading(runs):
    stdout, _ = runs["llama-pipeline"].result()
    doc = json.loads(stdout)
    assert doc["error"]["type"] == "model_incompatible"
    assert "pipeline" in doc["error"]["message"]


def test_distributed_run_verbose_prints_the_rank_layout(runs):
    _, stderr = runs["llama-tensor"].result()
    assert "[2 ranks, ring backend, tensor parallel: rank 0 127.0.0.1:" in stderr, stderr
    assert "rank 1 127.0.0.1:" in stderr


def test_each_rank_binds_openblas_before_joining_with_its_share_of_the_cpus(runs):
    job = runs["llama-tensor-openblas"]
    stdout, stderr = job.result()
    assert json.loads(stdout)["status"] == "success", stderr
    assert [p.returncode for p in job.procs] == [0, 0], stderr
    expected = f"BLAS: openblas {{}}, {max(1, len(os.sched_getaffinity(0)) // 2)} thread"
    assert re.search(re.escape(expected).replace(r"\{\}", r"[0-9.]+"), stderr), stderr


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
    hostfile = _ring_hostfile(tmp, addresses)
    port = free_port()
    ranks, logs = [], []
    for rank in range(len(addresses)):
        log = hostfile.with_name(f"rank{rank}.log")
        logs.append(log)
        prefix = wrappers[rank] if wrappers else []
        ranks.append(subprocess.Popen(
            [*prefix, *_rank_command(rank, hostfile, [
                "serve", *args, "--distributed", "--port", str(port),
                "--host", "0.0.0.0" if wrappers else "127.0.0.1"])],
            env=env, stdout=subprocess.DEVNULL, stderr=log.open("w")))
    return Cluster(ranks, f"http://{addresses[0] if wrappers else '127.0.0.1'}:{port}", logs)


def _wait_healthy(cluster: Cluster, timeout: float = 180) -> dict[str, Any]:
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


#: Every shared cluster can also be killed or stopped by the test that takes it.
_CLUSTER_FLAGS = ["--rank-timeout", "10", "--shutdown-grace", "0"]
_CLUSTER_PARALLEL = {"llama": "tensor", "qwen2": "pipeline"}


class Servers:
    """The module's servers, shared between tests.

    The single-process references are in-process servers, started on first
    use. A cluster starts when a test asks for it, after the previous one is
    stopped; a test that ends a cluster :meth:`take` s it, and the next test
    asking for that cluster gets a fresh one.
    """

    def __init__(self, models: dict[str, Path], env: dict[str, str], tmp: Path,
                 make_server: Callable[..., LiveServer]) -> None:
        self.models, self.env, self.tmp = models, env, tmp
        self._make_server = make_server
        self.singles: dict[str, LiveServer] = {}
        self.clusters: dict[str, Cluster] = {}
        self._taken: list[Cluster] = []
        self._launched: list[subprocess.Popen[bytes]] = []

    def _start_cluster(self, arch: str) -> Cluster:
        return _start_ranks(["--model", str(self.models[arch]), "--parallel",
                             _CLUSTER_PARALLEL[arch], *_CLUSTER_FLAGS], self.env, self.tmp)

    def start_launched(self) -> tuple[subprocess.Popen[bytes], str, Path]:
        """``serve --hostfile``: mlxk2 runs mlx.launch over a hostfile naming this host twice."""
        self.stop_clusters()
        hostfile = self.tmp / "launch-hosts.json"
        hostfile.write_text(json.dumps([{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * 2))
        port, log = free_port(), self.tmp / "launched.log"
        proc = subprocess.Popen(
            [*_mlxk2(), "serve", "--hostfile", str(hostfile), "--starting-port",
             str(free_port()), "--model", str(self.models["qwen2"]), "--port", str(port),
             "--shutdown-grace", "0"],
            env=self.env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=log.open("w"), start_new_session=True)
        self._launched.append(proc)
        return proc, f"http://127.0.0.1:{port}", log

    def single(self, arch: str) -> str:
        """The URL of the in-process single-process server for ``arch``."""
        if arch not in self.singles:
            self.singles[arch] = self._make_server(preload=str(self.models[arch]),
                                                   root=self.tmp)
        return self.singles[arch].url

    def cluster(self, arch: str) -> Cluster:
        if arch not in self.clusters:
            self.stop_clusters()
            self.clusters[arch] = self._start_cluster(arch)
        return self.clusters[arch]

    def take(self, arch: str) -> Cluster:
        cluster = self.cluster(arch)
        self._taken.append(self.clusters.pop(arch))
        return cluster

    def stop_clusters(self) -> None:
        """Stop every cluster, so the next one has the cores to itself."""
        for cluster in [*self.clusters.values(), *self._taken]:
            cluster.stop()
        self.clusters.clear()

    def stop(self) -> None:
        for proc in self._launched:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.stop_clusters()


@pytest.fixture(scope="module")
def servers(models, env, tmp_path_factory, make_server) -> Iterator[Servers]:
    started = Servers(models, env, tmp_path_factory.mktemp("dist-serve"), make_server)
    yield started
    started.stop()


def _complete(url: str, body: dict[str, Any]) -> tuple[str, Any, int | None]:
    """A streamed completion: its text, finish reason (or error event) and token count.

    How tokens are grouped into chunks depends on timing, so the text is joined.
    """
    conn = connection(url)
    conn.request("POST", "/v1/completions",
                 json.dumps({**body, "stream": True, "stream_options": {"include_usage": True}}),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    pieces, end, tokens = [], None, None
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            end = chunk["error"]
            break
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        for choice in chunk["choices"]:
            pieces.append(choice["text"])
            end = choice["finish_reason"] or end
    conn.close()
    return "".join(pieces), end, tokens


def _workload(url: str) -> list[tuple[str, Any, int | None]]:
    with concurrent.futures.ThreadPoolExecutor(len(STREAMS)) as pool:
        return list(pool.map(lambda body: _complete(url, body), STREAMS))


def _serves_like_one_process(servers: Servers, arch: str, parallel: str) -> None:
    cluster = servers.cluster(arch)
    health = _wait_healthy(cluster)
    assert health["distributed"]["world_size"] == 2
    assert health["distributed"]["parallel"] == parallel
    assert health["distributed"]["backend"] == "ring"
    single = servers.single(arch)
    one = {"prompt": PROMPT, "max_tokens": 30}
    assert _complete(cluster.url, one) == _complete(single, one)
    distributed, alone = _workload(cluster.url), _workload(single)
    assert distributed == alone
    assert len({tokens for _, _, tokens in alone}) > 2  # the streams really differ


def test_tensor_parallel_serve_equals_single_process_serve(servers):
    _serves_like_one_process(servers, "llama", "tensor")


def test_rank_one_killed_mid_stream_makes_rank_zero_answer_503_and_exit(servers):
    cluster = servers.take("llama")
    _wait_healthy(cluster)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stream = pool.submit(_complete, cluster.url, {"prompt": PROMPT, "max_tokens": 1500})
        time.sleep(1.0)
        assert not stream.done()
        cluster.ranks[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        _, end, _ = stream.result(timeout=30)
    assert isinstance(end, dict) and end["code"] == "rank_lost", end
    status = raw_request(cluster.url, "GET", "/health").status
    assert status == 503
    assert time.monotonic() - killed < 30
    code = cluster.ranks[0].wait(30)
    assert code != 0


def test_pipeline_parallel_serve_equals_single_process_serve(servers):
    _serves_like_one_process(servers, "qwen2", "pipeline")


def test_sigterm_to_rank_zero_stops_every_rank_cleanly(servers):
    cluster = servers.take("qwen2")
    _wait_healthy(cluster)
    cluster.ranks[0].send_signal(signal.SIGTERM)
    assert cluster.ranks[0].wait(30) == 0, cluster.log()
    assert cluster.ranks[1].wait(30) == 0, cluster.log()


def test_serve_with_a_hostfile_runs_mlx_launch_and_stops_on_ctrl_c(servers):
    proc, url, log = servers.start_launched()
    launched = Cluster([proc], url, [log])
    health = _wait_healthy(launched)
    assert health["distributed"]["world_size"] == 2
    assert health["distributed"]["backend"] == "ring"
    assert [r["addresses"][0].split(":")[0] for r in health["distributed"]["ranks"]] \
        == ["127.0.0.1", "127.0.0.1"]
    one = {"prompt": PROMPT, "max_tokens": 20}
    assert _complete(url, one) == _complete(servers.single("qwen2"), one)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal: the launcher and its ranks
    proc.wait(60)
    assert _ranks_of(proc.pid) == [], launched.log()


def _ranks_of(session: int) -> list[int]:
    """Processes still alive in the launcher's session."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == session and fields[0] != "Z":  # session id, state
            alive.append(int(entry.name))
    return alive


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


def test_two_hosts_in_network_namespaces_serve_like_one(models, env, tmp_path, two_namespaces,
                                                       servers):
    addresses = ["10.231.7.1", "10.231.7.2"]
    wrappers = [["ip", "netns", "exec", name] for name in two_namespaces]
    cluster = _start_ranks(["--model", str(models["qwen2"]), "--shutdown-grace", "0"], env,
                           tmp_path, addresses=addresses, wrappers=wrappers)
    try:
        health = _wait_healthy_in(two_namespaces[0], cluster)
        assert [r["addresses"][0].split(":")[0] for r in health["distributed"]["ranks"]] \
            == addresses
        one = {"prompt": PROMPT, "max_tokens": 20}
        expected = _complete(servers.single("qwen2"), one)
        got = subprocess.run(
            ["ip", "netns", "exec", two_namespaces[0], sys.executable, "-c", _CLIENT,
             cluster.url, json.dumps(one)],
            env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
        assert json.loads(got.stdout) == list(expected), got.stderr
        cluster.ranks[0].send_signal(signal.SIGTERM)
        assert cluster.ranks[0].wait(30) == 0, cluster.log()
        assert cluster.ranks[1].wait(30) == 0, cluster.log()
    finally:
        cluster.stop()


#: Rank 0 listens inside its namespace, so its client runs there too.
_CLIENT = """
import json, sys
from tests.server.test_distributed import _complete
print(json.dumps(list(_complete(sys.argv[1], json.loads(sys.argv[2])))))
"""


#: Polls inside the namespace until the server answers (one process, not one per poll).
_HEALTH = """
import sys, time, urllib.request
while True:
    try:
        print(urllib.request.urlopen(sys.argv[1] + "/health", timeout=5).read().decode())
        break
    except OSError:
        time.sleep(0.2)
"""


def _wait_healthy_in(namespace: str, cluster: Cluster, timeout: float = 180) -> dict[str, Any]:
    probe = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", _HEALTH, cluster.url],
        stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while probe.poll() is None:
            assert all(p.poll() is None for p in cluster.ranks), cluster.log()
            assert time.monotonic() < deadline, \
                "distributed server did not come up\n" + cluster.log()
            time.sleep(0.2)
        assert probe.stdout is not None
        health: dict[str, Any] = json.loads(probe.stdout.read())
        return health
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
