"""``push`` through the real CLI, and the full round trip clone, edit, push, pull, health."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures.cli import run_inprocess, run_subprocess
from tests.fixtures.hub import (
    closed_port_url,
    interrupt_at_stall,
    safetensors_bytes,
    tiny_model_files,
    unique_repo,
    write_files,
)
from tests.hub import Hub

DISCLAIMER = "Experimental feature (M0: upload only). No validation/filters; review on the Hub."


def test_missing_token_is_an_auth_error(hub_env: dict[str, str], tmp_path: Path) -> None:
    workspace = write_files(tmp_path / "ws", tiny_model_files())

    result = run_subprocess("push", str(workspace), "org/model", "--json", env=hub_env)

    assert result.code == 1
    doc = result.json
    assert doc["error"] == {"type": "auth_error", "message": "HF_TOKEN not set"}
    assert doc["data"]["experimental"] is True
    assert doc["data"]["disclaimer"] == DISCLAIMER
    assert doc["data"]["uploaded_files_count"] is None


def test_missing_repo_needs_create(
        hub_env: dict[str, str], hub_token: str, tmp_path: Path) -> None:
    workspace = write_files(tmp_path / "ws", tiny_model_files())

    result = run_subprocess("push", str(workspace), unique_repo("test-user"), "--json",
                            env={**hub_env, "HF_TOKEN": hub_token})

    assert result.code == 2
    assert result.json["error"]["type"] == "push_failed"
    assert "--create" in result.json["error"]["message"]


def test_rejected_token_is_an_auth_error(hub_env: dict[str, str], tmp_path: Path) -> None:
    workspace = write_files(tmp_path / "ws", tiny_model_files())

    result = run_subprocess("push", str(workspace), unique_repo("test-user"), "--create",
                            "--json", env={**hub_env, "HF_TOKEN": "hf_not_valid"})

    assert result.json["error"]["type"] == "auth_error"


def test_check_only_validates_locally_without_network_or_token(
        hub_env: dict[str, str], tmp_path: Path) -> None:
    good = write_files(tmp_path / "good", {**tiny_model_files(), "debug.log": b"noise",
                                           ".hfignore": b"# local files\n*.log\n",
                                           ".git/HEAD": b"ref: refs/heads/main\n",
                                           ".cache/huggingface/x.json": b"{}",
                                           ".m.mlxk2-clone/models--a--b/refs/main": b"0"})
    bad = write_files(tmp_path / "bad", {"config.json": b"{not json"})
    offline = {**hub_env, "HF_ENDPOINT": closed_port_url()}

    healthy = run_subprocess("push", str(good), "org/model", "--check-only", "--json",
                             env=offline)
    broken = run_subprocess("push", str(bad), "org/model", "--check-only", "--json",
                            env=offline)

    assert healthy.code == 0, healthy.stderr
    data = healthy.json["data"]
    report = data["workspace_health"]
    assert data["no_changes"] is None and data["commit_sha"] is None
    assert data["local_files_count"] == report["files_count"] == len(tiny_model_files())
    assert report["total_bytes"] == sum(len(b) for b in tiny_model_files().values())
    assert report["config"] == {"exists": True, "valid_json": True,
                                "path": str((good / "config.json").resolve())}
    assert report["weights"] == {"count": 1, "formats": ["safetensors"],
                                 "index": {"has_index": False, "missing": []},
                                 "pattern_complete": True}
    assert report["anomalies"] == [] and report["healthy"] is True
    broken_report = broken.json["data"]["workspace_health"]
    assert broken_report["healthy"] is False
    assert broken_report["config"]["valid_json"] is False
    assert "config.json is not valid JSON" in broken_report["anomalies"]


def test_round_trip_clone_edit_push_pull_health(
        hub: Hub, hub_env: dict[str, str], hub_token: str, tmp_path: Path) -> None:
    source = unique_repo("org", "source")
    hub.seed(source, files=tiny_model_files())
    target = unique_repo("test-user", "finetune")
    workspace = tmp_path / "ws"
    env = {**hub_env, "HF_TOKEN": hub_token}

    cloned = run_subprocess("clone", source, str(workspace), "--json", env=hub_env)
    assert cloned.code == 0, cloned.stderr

    created = run_subprocess("push", str(workspace), target, "--create", "--private",
                             "--json", env=env)
    assert created.code == 0, created.stderr
    first = created.json["data"]
    assert first["created_repo"] is True
    assert first["change_summary"] == {"added": 4, "modified": 0, "deleted": 0}
    assert first["commit_sha"] == hub.head(target)
    assert first["repo_url"].endswith(f"/{target}")

    config = json.loads((workspace / "config.json").read_text())
    (workspace / "config.json").write_text(json.dumps({**config, "fine_tuned": True}))
    (workspace / "README.md").write_text("Tiny test model\n")
    (workspace / "tokenizer_config.json").unlink()
    write_files(workspace, {".hfignore": b"*.log\nscratch/\n", "train.log": b"loss",
                            "scratch/tmp.bin": b"x", ".git/HEAD": b"ref"})

    kept = run_subprocess("push", str(workspace), target, "--commit", "Tune", "--json",
                          env=env)
    assert kept.code == 0, kept.stderr
    assert kept.json["data"]["change_summary"] == {"added": 1, "modified": 1, "deleted": 0}
    assert kept.json["data"]["remote_only_kept"] == 1
    assert "tokenizer_config.json" in hub.files(target)

    edited = run_subprocess("push", str(workspace), target, "--delete", "--json", env=env)
    assert edited.code == 0, edited.stderr
    second = edited.json["data"]
    assert second["change_summary"] == {"added": 0, "modified": 0, "deleted": 1}
    assert second["uploaded_files_count"] == 0
    assert second["no_changes"] is False and second["created_repo"] is False
    assert sorted(hub.files(target)) == [".gitattributes", "README.md", "config.json",
                                         "model.safetensors", "tokenizer.json"]

    unchanged = run_subprocess("push", str(workspace), target, "--json", env=env)
    assert unchanged.code == 0
    third = unchanged.json["data"]
    assert third["no_changes"] is True and third["commit_sha"] is None
    assert third["uploaded_files_count"] == 0
    assert hub.head(target) == second["commit_sha"]

    pulled = run_subprocess("pull", target, "--json", env=env)
    assert pulled.code == 0, pulled.stderr
    assert pulled.json["data"]["download_status"] == "success"
    health = run_subprocess("health", target, "--json", env=env).json["data"]
    assert health["summary"] == {"total": 1, "healthy_count": 1, "unhealthy_count": 0}


def test_branch_push_leaves_main_alone(
        hub: Hub, hub_env: dict[str, str], hub_token: str, tmp_path: Path) -> None:
    repo = unique_repo("test-user")
    workspace = write_files(tmp_path / "ws", tiny_model_files())
    env = {**hub_env, "HF_TOKEN": hub_token}
    assert run_subprocess("push", str(workspace), repo, "--create", env=env).code == 0
    main_head = hub.head(repo)
    (workspace / "notes.txt").write_text("experiment")

    result = run_subprocess("push", str(workspace), repo, "--branch", "dev", "--verbose",
                            env=env)

    assert result.code == 0, result.stderr
    assert "+ notes.txt" in result.stdout
    assert hub.head(repo) == main_head
    assert "notes.txt" in hub.files(repo, "dev")


def test_ctrl_c_during_upload_commits_nothing(
        hub: Hub, hub_env: dict[str, str], hub_token: str, tmp_path: Path) -> None:
    repo = unique_repo("test-user")
    files = {**tiny_model_files(), "model.safetensors": safetensors_bytes(3000)}
    workspace = write_files(tmp_path / "ws", files)
    env = {**hub_env, "HF_TOKEN": hub_token}
    stall = hub.stall_upload(files["model.safetensors"])
    code, _ = interrupt_at_stall(["push", str(workspace), repo, "--create"], env, stall)

    assert code == 130
    assert sorted(hub.files(repo)) == [".gitattributes"]

    result = run_subprocess("push", str(workspace), repo, "--json", env=env)

    assert result.code == 0, result.stderr
    assert result.json["data"]["change_summary"]["added"] == len(files)
    assert hub.files(repo) == {".gitattributes": hub.files(repo)[".gitattributes"], **files}


def test_check_only_strict_exits_1_only_for_an_unhealthy_workspace(tmp_path: Path) -> None:
    from tests.fixtures.cli import run_inprocess

    good = write_files(tmp_path / "good", tiny_model_files())
    bad = write_files(tmp_path / "bad", {"config.json": b"{not json"})

    healthy = run_inprocess("push", str(good), "org/model", "--check-only", "--strict", "--json")
    broken = run_inprocess("push", str(bad), "org/model", "--check-only", "--strict", "--json")
    lenient = run_inprocess("push", str(bad), "org/model", "--check-only", "--json")

    assert healthy.code == 0, healthy.stderr
    assert broken.code == 1
    assert broken.json["data"]["workspace_health"]["healthy"] is False
    assert lenient.code == 0


def test_strict_without_check_only_is_a_usage_error(tmp_path: Path) -> None:
    from tests.fixtures.cli import run_inprocess

    good = write_files(tmp_path / "good", tiny_model_files())
    result = run_inprocess("push", str(good), "org/model", "--strict", "--json")
    assert result.code == 1
    assert result.json["error"]["type"] == "ValidationError"
    assert "--check-only" in result.json["error"]["message"]


def test_help_says_files_gone_from_the_folder_stay_unless_delete() -> None:
    from tests.fixtures.cli import run_inprocess

    text = " ".join(run_inprocess("push", "--help").stdout.split())
    assert "are deleted" not in text
    assert "--delete" in text


def test_help_says_files_gone_from_the_folder_are_kept_unless_delete() -> None:
    help_text = " ".join(run_inprocess("push", "--help").stdout.split())
    assert "files gone from the folder are deleted" not in help_text
    assert "no longer has are kept, unless --delete is given" in help_text
