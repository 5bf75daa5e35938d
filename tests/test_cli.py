"""The CLI's contract: one envelope in JSON mode, spec exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlxk2 import errors
from mlxk2.cli import main
from tests.fixtures.cli import cli_env, run_inprocess, run_subprocess
from tests.fixtures.schema import SPEC_DIR, assert_valid_envelope

SPEC_ERROR_TYPES = {
    "ValidationError", "ambiguous_match", "model_not_found", "download_failed",
    "NetworkError", "PermissionError", "OperationError", "InternalError",
    "locks_present", "clone_failed", "access_denied", "FilesystemError", "auth_error",
}


def test_every_spec_error_type_is_declared_once() -> None:
    declared = [cls.error_type for cls in _all_error_classes() if "error_type" in vars(cls)]
    assert len(declared) == len(set(declared)), "an error type is declared twice"
    assert set(declared) >= SPEC_ERROR_TYPES


def test_spec_error_types_appear_in_the_spec_text() -> None:
    spec = (SPEC_DIR / "000_87f09eb6013864ea.txt").read_text()
    for error_type in SPEC_ERROR_TYPES:
        assert error_type in spec


def _all_error_classes() -> list[type[errors.MlxkError]]:
    found, pending = [], list(errors.MlxkError.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_version_json_reports_spec_version_and_memory() -> None:
    result = run_inprocess("--version", "--json")
    doc = result.json
    assert result.code == 0
    assert doc["command"] == "version"
    assert doc["data"]["json_api_spec_version"] == "0.1.7"
    first_line = Path("/proc/meminfo").read_text().splitlines()[0]
    meminfo_total = int(first_line.split()[1]) * 1024
    assert doc["data"]["system"]["memory_total_bytes"] == meminfo_total


def test_version_json_reports_the_configured_blas(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("MLXK2_BLAS", "0")
    blas = run_inprocess("--version", "--json").json["data"]["system"]["blas"]
    assert blas["backend"] == "stock" and blas["reason"] == "turned off by MLXK2_BLAS=0"
    monkeypatch.delenv("MLXK2_BLAS")
    blas = run_inprocess("--version", "--json").json["data"]["system"]["blas"]
    assert blas["backend"] == "openblas" and not blas["verified"]
    assert blas["reason"] == "shim is built on first run"
    assert not tmp_path.joinpath("mlxk2").exists()
    human = run_inprocess("--version").stdout
    assert "BLAS: openblas" in human


def test_version_json_outside_a_launch_reports_the_backends_mlx_offers(tmp_path) -> None:
    result = run_subprocess("--version", "--json", env=cli_env(tmp_path))
    distributed = result.json["data"]["system"]["distributed"]
    assert distributed["launch"] is None
    assert distributed["launcher"] == str(Path(sys.executable).with_name("mlx.launch"))
    probe = ("import mlx.core as mx\n"
             "print(','.join(b for b in ('ring', 'mpi', 'nccl', 'jaccl')"
             " if mx.distributed.is_available(b)))")
    offered = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=60, check=True).stdout.strip().split(",")
    assert distributed["backends"] == offered


def test_version_json_under_mlx_launch_reports_each_rank(tmp_path) -> None:
    launcher = str(Path(sys.executable).with_name("mlx.launch"))
    proc = subprocess.run([launcher, "-n", "2", "--backend", "ring", "--", sys.executable,
                           "-m", "mlxk2", "--version", "--json"], env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    docs, text = [], proc.stdout.strip()
    decoder = json.JSONDecoder()
    while text:
        doc, end = decoder.raw_decode(text)
        assert_valid_envelope(doc)
        docs.append(doc["data"]["system"]["distributed"]["launch"])
        text = text[end:].strip()
    assert sorted(d["rank"] for d in docs) == [0, 1]
    for launch in docs:
        assert launch["world_size"] == 2 and launch["backend"] == "ring"
        assert len(launch["hosts"]) == 2 and launch["hosts"][0] != launch["hosts"][1]


def test_version_human_names_the_rank_under_a_launch(monkeypatch, tmp_path) -> None:
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([["10.0.0.1:5000"], ["10.0.0.2:5000"], ["10.0.0.3:5000"]]))
    monkeypatch.setenv("MLX_RANK", "2")
    monkeypatch.setenv("MLX_HOSTFILE", str(hostfile))
    assert "Distributed: rank 2 of 3 (ring)" in run_inprocess("--version").stdout


def test_version_human_is_one_readable_line() -> None:
    result = run_inprocess("--version")
    assert result.code == 0
    assert result.stdout.startswith("mlxk2 2.")
    assert "JSON API 0.1.7" in result.stdout


@pytest.mark.parametrize("argv", [
    ["bogus", "--json"],
    ["--json", "show"],
    ["list", "--no-such-flag", "--json"],
])
def test_usage_errors_in_json_mode_print_a_valid_error_envelope(argv: list[str]) -> None:
    result = run_inprocess(*argv)
    doc = result.json
    assert result.code == 1
    assert doc["status"] == "error"
    assert doc["error"]["type"] == "ValidationError"
    assert result.stderr == ""


def test_usage_error_in_human_mode_is_one_stderr_line() -> None:
    result = run_inprocess("show")
    assert result.code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "Error:" in result.stderr


def test_json_flag_is_accepted_before_and_after_the_command(hf_home) -> None:
    before = run_inprocess("--json", "list")
    after = run_inprocess("list", "--json")
    assert before.json == after.json


def test_unexpected_exception_becomes_internal_error(monkeypatch, hf_home) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("mlxk2.ops.list.list_models", boom)
    result = run_inprocess("list", "--json")
    doc = result.json
    assert result.code == 1
    assert doc["error"] == {"type": "InternalError", "message": "RuntimeError: disk on fire"}
    assert "Traceback" not in result.stderr


def test_debug_env_shows_the_traceback(monkeypatch, hf_home) -> None:
    monkeypatch.setenv("MLXK2_DEBUG", "1")
    monkeypatch.setattr("mlxk2.ops.list.list_models",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
    result = run_inprocess("list")
    assert "Traceback" in result.stderr


def test_help_lists_commands_and_hides_alpha_ones() -> None:
    result = run_inprocess("--help")
    assert result.code == 0
    for name in ("list", "show", "health"):
        assert f"\n    {name}" in result.stdout
    assert "convert" not in result.stdout


@pytest.mark.parametrize("script", ["mlxk2", "mlxk", "mlxk-json"])
def test_console_scripts_share_the_entry_point(script: str) -> None:
    exe = subprocess.run([sys.executable, "-c",
                          "import importlib.metadata as m;"
                          f"print([e.value for e in m.entry_points(group='console_scripts')"
                          f" if e.name == '{script}'])"], capture_output=True, text=True)
    assert "mlxk2.cli:main" in exe.stdout


def test_cheap_commands_never_import_heavy_packages(tmp_path) -> None:
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['mlxk2'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('mlxk2', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = ['mlx', 'mlx_lm', 'transformers', 'fastapi', 'scipy_openblas32']\n"
        "if sys.argv[1] != '--version':\n    heavy.append('mlxk2.engine.blas')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy))\n"
    )
    env = cli_env(tmp_path, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    launched = {**env, "MLX_RANK": "1", "MLX_HOSTFILE": '[["127.0.0.1:1"], ["127.0.0.1:2"]]'}
    for argv, argv_env in ((["--version"], env), (["--version", "--json"], launched),
                           (["list"], env), (["show", "x"], env), (["health"], env),
                           (["rm", "x", "--json"], env)):
        proc = subprocess.run([sys.executable, "-c", probe, *argv], env=argv_env,
                              capture_output=True, text=True, timeout=60)
        assert "HEAVY=" in proc.stderr
        assert proc.stderr.rsplit("HEAVY=", 1)[1].strip() == "", argv
    assert not (tmp_path / "xdg").exists()  # no BLAS shim was built or probed


def test_subprocess_error_exit_code_and_single_document(tmp_path) -> None:
    result = run_subprocess("show", "nothing-here", "--json", env=cli_env(tmp_path))
    assert result.code == 1
    doc = json.loads(result.stdout)
    assert doc["error"]["type"] == "model_not_found"
    assert main is not None


def test_json_without_a_command_is_an_error_envelope() -> None:
    result = run_inprocess("--json")
    assert result.code == 1
    assert result.json["error"]["type"] == "ValidationError"


def test_ctrl_c_in_json_mode_still_prints_one_envelope(monkeypatch, hf_home) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mlxk2.ops.list.list_models", interrupted)
    result = run_inprocess("list", "--json")
    assert result.code == 130
    assert result.json["error"]["type"] == "interrupted"


@pytest.mark.parametrize(("argv", "command"), [
    (["list", "--no-such-flag"], "mlxk2 list"),
    (["server", "--no-such-flag"], "mlxk2 serve"),
    (["show"], "mlxk2 show"),
    (["serve", "--port", "abc"], "mlxk2 serve"),
    (["--no-such-flag"], "mlxk2"),
])
def test_usage_error_names_the_command_and_points_to_its_help(argv: list[str],
                                                              command: str) -> None:
    result = run_inprocess(*argv)
    assert result.code == 1
    assert result.stderr.startswith(f"Error: {command}: ")
    assert f"(see '{command} --help')" in result.stderr
    assert "_port" not in result.stderr  # argparse's type-function name is no message
    as_json = run_inprocess(*argv, "--json")
    assert as_json.json["error"]["message"] == result.stderr[len("Error: "):].strip()


def test_a_subcommand_usage_error_in_json_mode_is_exactly_one_envelope(tmp_path) -> None:
    result = run_subprocess("run", "demo-chat", "--no-such-flag", "--json",
                            env=cli_env(tmp_path))
    assert result.code == 1
    assert result.stderr == ""
    assert result.json["error"]["message"].startswith("mlxk2 run: unrecognized arguments")


def test_run_without_a_prompt_is_not_reported_as_missing_one() -> None:
    result = run_inprocess("run")
    assert "required: model (" in result.stderr
