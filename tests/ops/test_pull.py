"""``pull`` through the real CLI against the test Hub."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import httpx2
import pexpect
import pytest

from mlxk2.errors import DownloadFailedError
from mlxk2.ops._hub import translate
from tests.fixtures.cli import run_subprocess
from tests.fixtures.hub import (
    closed_port_url,
    interrupt_at_stall,
    read_only_dir,
    safetensors_bytes,
    tiny_model_files,
    unique_repo,
)
from tests.hub import Hub


def cache_dir(env: dict[str, str]) -> Path:
    return Path(env["HF_HOME"]) / "hub"


def snapshot_of(env: dict[str, str], repo: str) -> Path:
    folder = cache_dir(env) / f"models--{repo.replace('/', '--')}"
    (snapshot,) = (folder / "snapshots").iterdir()
    return snapshot


def health(env: dict[str, str], name: str) -> dict:
    result = run_subprocess("health", name, "--json", env=env)
    assert result.code == 0, result.stderr
    return result.json["data"]


def test_short_name_is_expanded_downloaded_and_then_already_exists(
        hub: Hub, hub_env: dict[str, str]) -> None:
    repo = unique_repo("mlx-community")
    hub.seed(repo, files=tiny_model_files())

    first = run_subprocess("pull", repo.split("/")[1], "--json", env=hub_env)
    again = run_subprocess("pull", repo, "--json", env=hub_env)

    assert first.code == 0, first.stderr
    assert first.json["data"] == {"model": repo, "download_status": "success",
                                  "message": f"Successfully downloaded model {repo}",
                                  "expanded_name": repo}
    assert snapshot_of(hub_env, repo).name == hub.head(repo)
    assert health(hub_env, repo)["summary"]["healthy_count"] == 1
    assert again.code == 0
    assert again.json["data"]["download_status"] == "already_exists"


def test_revision_after_at_selects_that_commit(hub: Hub, hub_env: dict[str, str]) -> None:
    repo = unique_repo("org")
    old = hub.seed(repo, files=tiny_model_files(values=16))
    hub.seed(repo, files=tiny_model_files(values=32))

    result = run_subprocess("pull", f"{repo}@{old}", "--json", env=hub_env)

    assert result.code == 0, result.stderr
    snapshot = snapshot_of(hub_env, repo)
    assert snapshot.name == old
    assert (snapshot / "model.safetensors").read_bytes() == safetensors_bytes(16)


def test_unhealthy_cached_model_is_repaired_not_reported_as_existing(
        hub: Hub, hub_env: dict[str, str]) -> None:
    repo = unique_repo("org")
    hub.seed(repo, files=tiny_model_files())
    assert run_subprocess("pull", repo, env=hub_env).code == 0
    snapshot = snapshot_of(hub_env, repo)
    weights = (snapshot / "model.safetensors").resolve()
    weights.write_bytes(weights.read_bytes()[:40])  # truncated blob
    (snapshot / "config.json").unlink()
    assert health(hub_env, repo)["summary"]["unhealthy_count"] == 1

    result = run_subprocess("pull", repo, "--json", env=hub_env)

    assert result.code == 0, result.stderr
    data = result.json["data"]
    assert data["download_status"] == "success"
    assert "Repaired" in data["message"]
    assert "config.json" in data["message"] and "model.safetensors" in data["message"]
    assert data["repaired_files"] == ["config.json", "model.safetensors"]
    assert health(hub_env, repo)["summary"]["healthy_count"] == 1
    assert (snapshot / "model.safetensors").read_bytes() == tiny_model_files()[
        "model.safetensors"]


@pytest.mark.parametrize(
    ("name", "setup", "error_type", "code"),
    [
        ("", None, "ValidationError", 1),
        ("org/" + "x" * 93, None, "ValidationError", 1),
        ("org/bad--segment", None, "ValidationError", 1),
        ("org/never-seeded", None, "download_failed", 2),
        ("gated", "gated", "access_denied", 2),
        ("private", "private", "access_denied", 2),
    ],
)
def test_errors_have_spec_types_and_exit_codes(
        hub: Hub, hub_env: dict[str, str], name: str, setup: str | None, error_type: str,
        code: int) -> None:
    if setup:
        name = unique_repo("org", setup)
        hub.seed(name, files=tiny_model_files(), gated=setup == "gated",
                 private=setup == "private")

    result = run_subprocess("pull", name, "--json", env=hub_env)

    assert result.code == code
    doc = result.json
    assert doc["error"]["type"] == error_type
    if error_type == "download_failed":
        assert "Repository Not Found" in doc["error"]["message"]
        assert doc["data"]["download_status"] == "failed"
    if error_type == "ValidationError":
        assert doc["data"] == {"model": None, "download_status": "error", "message": "",
                               "expanded_name": None}


def test_gated_repo_downloads_with_a_token(
        hub: Hub, hub_env: dict[str, str], hub_token: str) -> None:
    repo = unique_repo("org", "gated")
    hub.seed(repo, files=tiny_model_files(), gated=True)

    result = run_subprocess("pull", repo, "--json", env={**hub_env, "HF_TOKEN": hub_token})

    assert result.code == 0, result.stderr
    assert result.json["data"]["download_status"] == "success"


def test_rejected_token_is_access_denied(hub: Hub, hub_env: dict[str, str]) -> None:
    repo = unique_repo("org")
    hub.seed(repo, files=tiny_model_files())

    result = run_subprocess("pull", repo, "--json", env={**hub_env, "HF_TOKEN": "hf_wrong"})

    assert result.code == 2
    assert result.json["error"]["type"] == "access_denied"
    assert "token" in result.json["error"]["message"]


def test_refused_connection_is_a_network_error(hub_env: dict[str, str]) -> None:
    result = run_subprocess("pull", "org/anything", "--json",
                            env={**hub_env, "HF_ENDPOINT": closed_port_url()})

    assert result.code == 2
    assert result.json["error"]["type"] == "NetworkError"


def test_unwritable_cache_is_an_operation_error(
        hub: Hub, hub_env: dict[str, str], tmp_path: Path) -> None:
    repo = unique_repo("org")
    hub.seed(repo, files=tiny_model_files())
    not_a_dir = tmp_path / "cache-is-a-file"
    not_a_dir.write_text("")

    result = run_subprocess("pull", repo, "--json",
                            env={**hub_env, "HF_HUB_CACHE": str(not_a_dir)})

    assert result.code == 3
    assert result.json["error"]["type"] in ("OperationError", "PermissionError")


def test_read_only_cache_is_a_permission_error(
        hub: Hub, hub_env: dict[str, str], tmp_path: Path) -> None:
    repo = unique_repo("org")
    hub.seed(repo, files=tiny_model_files())
    locked = tmp_path / "locked-cache"
    locked.mkdir()

    with read_only_dir(locked):
        result = run_subprocess("pull", repo, "--json",
                                env={**hub_env, "HF_HUB_CACHE": str(locked)})

    assert result.code == 3
    assert result.json["error"]["type"] == "PermissionError"
    assert result.json["data"]["download_status"] == "failed"


def test_connection_dropped_mid_file_is_retried_to_a_healthy_model(
        hub: Hub, hub_env: dict[str, str]) -> None:
    repo = unique_repo("org")
    files = tiny_model_files(values=4096)
    hub.seed(repo, files=files)
    fault = hub.add_fault(repo, "model.safetensors", "drop", after_bytes=5000)

    result = run_subprocess("pull", repo, "--json", env=hub_env)

    assert result.code == 0, result.stderr
    assert fault.reached.is_set()
    assert (snapshot_of(hub_env, repo) / "model.safetensors").read_bytes() == \
        files["model.safetensors"]
    assert health(hub_env, repo)["summary"]["healthy_count"] == 1


def test_ctrl_c_leaves_an_unhealthy_model_that_the_next_pull_completes(
        hub: Hub, hub_env: dict[str, str]) -> None:
    repo = unique_repo("org")
    hub.seed(repo, files=tiny_model_files(values=4104))
    stall = hub.add_fault(repo, "model.safetensors", "stall", after_bytes=3000)
    code, stderr = interrupt_at_stall(["pull", repo], hub_env, stall)

    assert code == 130
    assert "interrupted" in stderr.lower()
    unhealthy = health(hub_env, repo)["unhealthy"]
    assert [entry["name"] for entry in unhealthy] == [repo]

    result = run_subprocess("pull", repo, "--json", env=hub_env)

    assert result.code == 0, result.stderr
    assert result.json["data"]["download_status"] == "success"
    assert health(hub_env, repo)["summary"]["healthy_count"] == 1


def test_progress_bars_only_on_a_terminal(hub: Hub, hub_env: dict[str, str]) -> None:
    repo = unique_repo("org")
    hub.seed(repo, files=tiny_model_files())
    other = unique_repo("org")
    hub.seed(other, files=tiny_model_files())

    piped = run_subprocess("pull", repo, env=hub_env)
    terminal = pexpect.spawn(sys.executable, ["-m", "mlxk2", "pull", other],
                             env={**hub_env, "COLUMNS": "120"}, timeout=60, encoding="utf-8")
    terminal.expect(pexpect.EOF)
    terminal.close()

    assert piped.code == 0
    assert "%|" not in piped.stderr and "Fetching" not in piped.stderr
    assert terminal.exitstatus == 0
    assert "Fetching 4 files" in terminal.before
    assert "Successfully downloaded" in terminal.before
    assert os.path.isdir(cache_dir(hub_env) / f"models--{other.replace('/', '--')}")

    third = unique_repo("org")
    hub.seed(third, files=tiny_model_files())
    json_mode = pexpect.spawn(sys.executable, ["-m", "mlxk2", "pull", third, "--json"],
                              env=hub_env, timeout=60, encoding="utf-8")
    json_mode.expect(pexpect.EOF)
    json_mode.close()
    assert json.loads(json_mode.before)["data"]["download_status"] == "success"


@pytest.mark.parametrize(
    ("raised", "error_type", "code"),
    [
        (lambda: httpx2.ReadTimeout("timed out"), "NetworkError", 2),
        (lambda: httpx2.ConnectError("refused"), "NetworkError", 2),
        (lambda: PermissionError(13, "Permission denied"), "PermissionError", 3),
        (lambda: OSError(28, "No space left on device"), "OperationError", 3),
    ],
)
def test_error_table_covers_timeouts_and_disk_failures(
        raised: Callable[[], Exception], error_type: str, code: int) -> None:
    error = translate(raised(), DownloadFailedError, "org/model")

    assert (error.error_type, error.exit_code) == (error_type, code)


def test_repair_waits_for_a_download_another_process_is_running(
        hub: Hub, hub_env: dict[str, str]) -> None:
    import fcntl

    repo = unique_repo("org")
    hub.seed(repo, files=tiny_model_files())
    assert run_subprocess("pull", repo, env=hub_env).code == 0
    snapshot = snapshot_of(hub_env, repo)
    blobs = snapshot.parent.parent / "blobs"
    in_flight = blobs / ("f" * 64 + ".incomplete")
    in_flight.write_bytes(b"partial")
    lock = Path(hub_env["HF_HOME"]) / "hub" / ".locks" / blobs.parent.name / "x.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run_subprocess("pull", repo, "--json", env=hub_env)
    assert (result.code, result.json["error"]["type"]) == (1, "locks_present")
    assert in_flight.read_bytes() == b"partial"
