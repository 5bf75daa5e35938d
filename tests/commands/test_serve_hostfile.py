"""``serve --hostfile``: the ``mlx.launch`` command line it becomes, and the flags it refuses.

The end-to-end run (mlx.launch starting two local ranks) is in
tests/server/test_distributed.py; these check the translation in-process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mlxk2.cli import build_parser
from mlxk2.commands import _distributed, serve
from tests.fixtures.cli import run_inprocess


def _command(tmp_path: Path, hosts: object, *argv: str) -> list[str]:
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps(hosts))
    args = build_parser().parse_args(["serve", "--hostfile", str(hostfile), *argv])
    return _distributed.launcher_command(args, "serve", serve.add_arguments, json_mode=False)


def test_hostfile_becomes_mlx_launch_with_the_same_options_and_distributed(tmp_path):
    hosts = [{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * 2
    command = _command(tmp_path, hosts, "--model", "m", "--port", "9000", "--parallel",
                       "tensor", "--cors-origin", "a", "--cors-origin", "b",
                       "--starting-port", "4000", "--log-json")
    launch, ranks = command[:command.index("--")], command[command.index("--") + 1:]
    assert Path(launch[0]).name == "mlx.launch"
    assert launch[1:] == ["--hostfile", str(tmp_path / "hosts.json"), "--backend", "ring",
                          "--starting-port", "4000"]
    assert ranks[:4] == [sys.executable, "-m", "mlxk2", "serve"]
    assert ranks[4:] == ["--model", "m", "--port", "9000", "--cors-origin", "a",
                         "--cors-origin", "b", "--log-json", "--parallel", "tensor",
                         "--distributed"]


def test_a_hostfile_that_names_its_backend_keeps_it(tmp_path):
    hosts = {"backend": "jaccl", "hosts": [{"ssh": "a", "ips": []}, {"ssh": "b", "ips": []}]}
    command = _command(tmp_path, hosts)
    assert "--backend" not in command[:command.index("--")]


def test_starting_port_without_hostfile_is_refused():
    result = run_inprocess("serve", "--starting-port", "4000", "--json")
    assert result.code == 1
    assert "--starting-port needs --hostfile" in result.json["error"]["message"]


def test_a_missing_hostfile_is_refused_before_anything_starts(tmp_path):
    result = run_inprocess("serve", "--hostfile", str(tmp_path / "nope.json"), "--json")
    assert result.code == 1
    assert result.json["error"]["type"] == "ValidationError"
    assert "--hostfile" in result.json["error"]["message"]


def test_hostfile_refuses_float32_and_threads_before_launching(tmp_path):
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * 2))
    for flags in (["--cpu-dtype", "float32"], ["--threads", "2"]):
        result = run_inprocess("serve", "--hostfile", str(hostfile), *flags, "--json")
        assert result.code == 1, flags
        assert "--distributed keeps the model as stored" in result.json["error"]["message"]


def test_hostfile_passes_a_native_cpu_dtype_to_the_ranks(tmp_path):
    command = _command(tmp_path, [{"ssh": "a", "ips": []}] * 2, "--cpu-dtype", "native")
    ranks = command[command.index("--") + 1:]
    assert ranks[4:] == ["--cpu-dtype", "native", "--distributed"]
