"""``clone`` through the real CLI: a plain workspace, errors, interruption."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlxk2.ops.clone import clone_cache_dir, copy_file
from tests.fixtures.cli import run_subprocess
from tests.fixtures.hub import interrupt_at_stall, tiny_model_files, unique_repo
from tests.fixtures.models import CHAT, DemoCache
from tests.hub import Hub


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()}


def test_clone_writes_real_files_and_leaves_the_cache_alone(
        hub: Hub, hub_env: dict[str, str], tmp_path: Path) -> None:
    repo = unique_repo("mlx-community")
    files = {**tiny_model_files(), "extra/notes.txt": b"nested"}
    hub.seed(repo, files=files)
    target = tmp_path / "work" / "model"

    result = run_subprocess("clone", repo.split("/")[1], str(target), "--json", env=hub_env)

    assert result.code == 0, result.stderr
    assert result.json["data"] == {"model": repo, "clone_status": "success",
                                   "message": f"Cloned to {target}", "target_dir": str(target),
                                   "expanded_name": repo}
    assert tree(target) == files
    assert not any(p.is_symlink() for p in target.rglob("*"))
    assert not clone_cache_dir(target).exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]
    assert not (Path(hub_env["HF_HOME"]) / "hub").exists()

    shown = run_subprocess("show", str(target), "--json", env=hub_env)
    checked = run_subprocess("health", str(target), "--json", env=hub_env)
    assert shown.json["data"]["model"]["cached"] is False
    assert checked.json["data"]["summary"]["healthy_count"] == 1


@pytest.mark.parametrize(
    ("case", "error_type", "status", "code"),
    [
        ("non_empty_target", "ValidationError", "error", 1),
        ("unknown_repo", "clone_failed", "failed", 2),
        ("gated_repo", "access_denied", "access_denied", 2),
    ],
)
def test_clone_errors(hub: Hub, hub_env: dict[str, str], tmp_path: Path, case: str,
                      error_type: str, status: str, code: int) -> None:
    repo = unique_repo("org")
    if case != "unknown_repo":
        hub.seed(repo, files=tiny_model_files(), gated=case == "gated_repo")
    target = tmp_path / "ws"
    if case == "non_empty_target":
        target.mkdir()
        (target / "keep.txt").write_text("mine")

    result = run_subprocess("clone", repo, str(target), "--json", env=hub_env)

    assert result.code == code
    doc = result.json
    assert doc["error"]["type"] == error_type
    assert doc["data"]["clone_status"] == status
    assert doc["data"]["target_dir"] == str(target)
    assert not clone_cache_dir(target).exists()
    if case == "non_empty_target":
        assert tree(target) == {"keep.txt": b"mine"}
    else:
        assert not target.exists()


def test_interrupted_clone_leaves_no_target_and_resumes(
        hub: Hub, hub_env: dict[str, str], tmp_path: Path) -> None:
    repo = unique_repo("org")
    files = tiny_model_files(values=4112)
    hub.seed(repo, files=files)
    stall = hub.add_fault(repo, "model.safetensors", "stall", after_bytes=2000)
    target = tmp_path / "ws"
    code, _ = interrupt_at_stall(["clone", repo, str(target)], hub_env, stall)

    assert code == 130
    assert not target.exists()
    assert clone_cache_dir(target).is_dir()

    result = run_subprocess("clone", repo, str(target), "--json", env=hub_env)

    assert result.code == 0, result.stderr
    assert tree(target) == files
    assert not clone_cache_dir(target).exists()


def test_copy_file_shares_blocks_or_falls_back_to_a_copy(tmp_path: Path) -> None:
    src = tmp_path / "blob"
    src.write_bytes(b"weights" * 1000)

    method = copy_file(src, tmp_path / "copy")

    assert method in ("reflink", "clonefile", "copy")
    assert (tmp_path / "copy").read_bytes() == src.read_bytes()
    assert not (tmp_path / "copy").is_symlink()


def test_clone_into_the_current_empty_folder(
        hub: Hub, hub_env: dict[str, str], tmp_path: Path) -> None:
    repo = unique_repo("org")
    hub.seed(repo, files=tiny_model_files())
    here = tmp_path / "here"
    here.mkdir()

    result = run_subprocess("clone", repo, ".", "--json", env=hub_env, cwd=here)

    assert result.code == 0, result.stderr
    assert result.json["data"]["target_dir"] == "."
    assert tree(here) == tiny_model_files()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".here.")]


def test_cloned_real_model_runs_by_path(
        hub: Hub, hub_env: dict[str, str], tmp_path: Path, demo_cache: DemoCache) -> None:
    repo = unique_repo("mlxk2", "demo-chat")
    hub.seed(repo, demo_cache.paths[CHAT])
    workspace = tmp_path / "ws"
    assert run_subprocess("clone", repo, str(workspace), env=hub_env).code == 0

    result = run_subprocess("run", str(workspace), "Hello", "--max-tokens", "4", "--seed", "1",
                            "--json", env=hub_env)

    assert result.code == 0, result.stderr
    data = result.json["data"]
    assert data["model"] == str(workspace)
    assert data["tokens_generated"] >= 1


def test_clone_refuses_a_target_inside_the_cache(hub: Hub, hub_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    repo = unique_repo("org")
    hub.seed(repo, files=tiny_model_files())
    target = tmp_path / "hf_home" / "hub" / "models--evil--x"

    result = run_subprocess("clone", repo, str(target), "--json", env=hub_env)

    assert (result.code, result.json["error"]["type"]) == (1, "ValidationError")
    assert not target.exists()
