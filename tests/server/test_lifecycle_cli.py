"""``mlxk2 ps``, ``load`` and ``unload`` (``stop``) against a real ``mlxk2 serve`` process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.cli import cli_env, run_inprocess, run_subprocess
from tests.fixtures.server import ServeProcess, free_port, raw_request

KEY = "cli-secret"


@pytest.fixture(scope="module")
def mid_served(serve_process, mid_workspace) -> ServeProcess:
    return serve_process("--model", str(mid_workspace), "--keep-alive", "never",
                         "--prompt-cache", "0", "--no-ui", MLXK2_API_KEY=KEY)


def _cli(server: ServeProcess, demo_cache, *args: str, key: str | None = KEY):
    extra = {"MLXK2_URL": server.url}
    if key is not None:
        extra["MLXK2_API_KEY"] = key
    return run_subprocess(*args, env=cli_env(demo_cache.hf_home, **extra), timeout=120)


def _rss(server: ServeProcess) -> int:
    return raw_request(server.url, "GET", "/health").json()["rss_bytes"]


def test_unload_frees_memory_then_load_and_ps_show_the_model(mid_served, mid_workspace,
                                                             demo_cache):
    name = str(mid_workspace)
    kept = _cli(mid_served, demo_cache, "load", name, "--keep-alive", "never", "--json")
    assert kept.code == 0, kept.stderr
    listed = _cli(mid_served, demo_cache, "ps", "--json")
    assert listed.code == 0, listed.stderr
    data = listed.json["data"]
    assert data["server"] == mid_served.url
    assert [m["name"] for m in data["models"]] == [name]
    assert data["models"][0]["keep_alive_seconds"] is None
    loaded_rss = _rss(mid_served)

    unloaded = _cli(mid_served, demo_cache, "unload", name, "--json")
    assert unloaded.code == 0, unloaded.stderr
    assert unloaded.json["data"] == {"server": mid_served.url, "model": name,
                                     "was_loaded": True, "loaded": False}
    assert _cli(mid_served, demo_cache, "ps", "--json").json["data"]["count"] == 0
    weights = sum(p.stat().st_size for p in mid_workspace.glob("*.safetensors"))
    assert loaded_rss - _rss(mid_served) > weights * 0.6

    loaded = _cli(mid_served, demo_cache, "load", name, "--keep-alive", "30m", "--json")
    assert loaded.code == 0, loaded.stderr
    model = loaded.json["data"]["model"]
    assert (model["name"], model["keep_alive_seconds"]) == (name, 1800)
    assert model["memory_bytes"] > weights * 0.6
    shown = _cli(mid_served, demo_cache, "ps")
    assert shown.code == 0
    header, row = shown.stdout.splitlines()
    assert header.split() == ["NAME", "MEMORY", "ACTIVE", "QUEUED", "UNLOADS"]
    assert row.startswith(name) and row.rstrip().endswith(("in 30m", "in 29m"))

    reloaded_rss = _rss(mid_served)
    stopped = _cli(mid_served, demo_cache, "stop", name)
    assert stopped.code == 0, stopped.stderr
    assert stopped.stdout.strip() == f"Unloaded {name}."
    assert reloaded_rss - _rss(mid_served) > weights * 0.6


@pytest.mark.parametrize("argv", [["ps"], ["load", "mlxk2/demo-chat"],
                                  ["unload", "mlxk2/demo-chat"]])
def test_each_command_needs_the_api_key(mid_served, demo_cache, argv):
    for key in (None, "wrong"):
        result = _cli(mid_served, demo_cache, *argv, "--json", key=key)
        assert result.code == 1
        assert result.json["error"]["type"] == "auth_error"
    assert _cli(mid_served, demo_cache, *argv, "--json").code == 0


def test_unknown_model_and_bad_keep_alive_are_reported(mid_served, demo_cache):
    missing = _cli(mid_served, demo_cache, "load", "nobody/missing", "--json")
    assert (missing.code, missing.json["error"]["type"]) == (1, "model_not_found")
    bad = _cli(mid_served, demo_cache, "load", "mlxk2/demo-chat", "--keep-alive", "soon",
               "--json")
    assert (bad.code, bad.json["error"]["type"]) == (1, "ValidationError")
    assert "soon" in bad.json["error"]["message"]


@pytest.mark.parametrize("argv", [["ps"], ["load", "m"], ["unload", "m"], ["stop", "m"]])
def test_an_unreachable_server_is_a_network_error(argv, monkeypatch):
    monkeypatch.delenv("MLXK2_URL", raising=False)
    result = run_inprocess(*argv, "--url", f"http://127.0.0.1:{free_port()}", "--json")
    assert result.code == 2
    doc = result.json
    assert doc["command"] == ("unload" if argv[0] == "stop" else argv[0])
    assert doc["error"]["type"] == "NetworkError"


def test_url_flag_wins_over_the_environment(mid_served, monkeypatch):
    monkeypatch.setenv("MLXK2_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLXK2_API_KEY", KEY)
    assert run_inprocess("ps", "--json").code == 2
    assert run_inprocess("ps", "--url", mid_served.url, "--json").code == 0


def test_client_commands_never_import_the_server_stack(tmp_path: Path):
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['mlxk2'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('mlxk2', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = [m for m in ('mlx', 'mlx_lm', 'transformers', 'fastapi', 'huggingface_hub')"
        " if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy))\n"
    )
    env = cli_env(tmp_path, MLXK2_URL=f"http://127.0.0.1:{free_port()}")
    for argv in (["ps"], ["load", "x", "--keep-alive", "1m"], ["unload", "x"]):
        proc = subprocess.run([sys.executable, "-c", probe, *argv], env=env,
                              capture_output=True, text=True, timeout=60)
        assert "No mlxk2 server answered" in proc.stderr
        assert proc.stderr.rsplit("HEAVY=", 1)[1].strip() == "", argv


def test_no_ui_flag_leaves_only_the_api(mid_served):
    assert raw_request(mid_served.url, "GET", "/").status == 404
    assert raw_request(mid_served.url, "GET", "/health").status == 200
