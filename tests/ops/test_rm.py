"""``rm`` through the real CLI: exact and fuzzy names, locks, snapshots, refusals."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from mlxk2.cache.layout import repo_folder, store_snapshot
from mlxk2.errors import PermissionDeniedError
from mlxk2.ops.rm import execute_removal, plan_removal
from tests.fixtures.cli import cli_env, run_subprocess
from tests.fixtures.hub import read_only_dir, tiny_model_files, write_files

OLD = "a" * 40
NEW = "b" * 40


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path / "hf_home")


@pytest.fixture
def cache(env: dict[str, str]) -> Path:
    root = Path(env["HF_HOME"]) / "hub"
    root.mkdir(parents=True)
    return root


def add_model(cache: Path, repo_id: str, tmp_path: Path, *commits: str) -> Path:
    """A cached model (one snapshot per commit) with the stale lock files a download leaves."""
    src = write_files(tmp_path / f"src-{repo_id.replace('/', '_')}", tiny_model_files())
    for i, commit in enumerate(commits or (None,)):
        if i:
            (src / "notes.txt").write_text(f"revision {i}")
        store_snapshot(cache, repo_id, src, commit)
    locks = cache / ".locks" / repo_folder(cache, repo_id).name
    locks.mkdir(parents=True)
    (locks / "deadbeef.lock").touch()
    return repo_folder(cache, repo_id)


@pytest.fixture
def held_lock(cache: Path) -> Iterator[Callable[[Path], None]]:
    handles: list[int] = []

    def hold(path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        handles.append(fd)

    yield hold
    for fd in handles:
        os.close(fd)


def test_exact_name_deletes_the_model_folder_and_its_locks(
        cache: Path, env: dict[str, str], tmp_path: Path) -> None:
    folder = add_model(cache, "mlx-community/Tiny-4bit", tmp_path)

    result = run_subprocess("rm", "Tiny-4bit", "--json", env=env)

    assert result.code == 0, result.stderr
    assert result.json["data"] == {"model": "mlx-community/Tiny-4bit", "action": "deleted",
                                   "message": "Successfully deleted mlx-community/Tiny-4bit"}
    assert not folder.exists()
    assert not (cache / ".locks" / folder.name).exists()


def test_held_lock_blocks_deletion_unless_forced(
        cache: Path, env: dict[str, str], tmp_path: Path,
        held_lock: Callable[[Path], None]) -> None:
    folder = add_model(cache, "org/locked", tmp_path)
    held_lock(cache / ".locks" / folder.name / "cafe.lock")

    blocked = run_subprocess("rm", "org/locked", "--json", env=env)
    forced = run_subprocess("rm", "org/locked", "--force", "--json", env=env)

    assert blocked.code == 1
    assert blocked.json["error"]["type"] == "locks_present"
    assert blocked.json["data"] == {"model": "org/locked", "locks_detected": True,
                                    "lock_files": [f".locks/{folder.name}/cafe.lock"]}
    assert forced.code == 0
    assert not folder.exists()


def test_ambiguous_pattern_lists_matches_and_deletes_nothing(
        cache: Path, env: dict[str, str], tmp_path: Path) -> None:
    one = add_model(cache, "org/Llama-1B", tmp_path)
    two = add_model(cache, "org/Llama-3B", tmp_path)

    result = run_subprocess("rm", "Llama", "--json", env=env)

    assert result.code == 1
    assert result.json["error"]["type"] == "ambiguous_match"
    assert result.json["data"] == {"matches": ["org/Llama-1B", "org/Llama-3B"]}
    assert one.exists() and two.exists()


def test_unknown_model_is_model_not_found(cache: Path, env: dict[str, str]) -> None:
    result = run_subprocess("rm", "org/nothing", "--json", env=env)

    assert result.code == 1
    assert result.json["error"]["type"] == "model_not_found"


def test_workspace_path_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    workspace = write_files(tmp_path / "ws", tiny_model_files())

    result = run_subprocess("rm", str(workspace), "--force", "--json", env=env)

    assert result.code == 1
    assert result.json["error"]["type"] == "ValidationError"
    assert "cache" in result.json["error"]["message"]
    assert (workspace / "config.json").exists()


def test_at_hash_deletes_one_snapshot_then_the_last_one_deletes_the_model(
        cache: Path, env: dict[str, str], tmp_path: Path) -> None:
    folder = add_model(cache, "org/two-revs", tmp_path, OLD, NEW)
    notes_blob = (folder / "snapshots" / NEW / "notes.txt").resolve()

    first = run_subprocess("rm", f"org/two-revs@{NEW[:7]}", "--json", env=env)

    assert first.code == 0, first.stderr
    assert first.json["data"]["snapshot"] == NEW
    assert sorted(p.name for p in (folder / "snapshots").iterdir()) == [OLD]
    assert not notes_blob.exists()  # only the removed snapshot used it
    assert (folder / "snapshots" / OLD / "config.json").is_file()

    last = run_subprocess("rm", f"org/two-revs@{OLD[:7]}", "--json", env=env)

    assert last.code == 0
    assert not folder.exists()


def test_fuzzy_match_needs_force_when_nobody_can_confirm(
        cache: Path, env: dict[str, str], tmp_path: Path) -> None:
    folder = add_model(cache, "org/Qwen-Tiny", tmp_path)

    refused = run_subprocess("rm", "qwen-t", env=env)
    assert refused.code == 1
    assert "--force" in refused.stderr
    assert folder.exists()

    forced = run_subprocess("rm", "qwen-t", "--force", env=env)
    assert forced.code == 0
    assert not folder.exists()


def test_fuzzy_match_asks_on_a_terminal(
        cache: Path, env: dict[str, str], tmp_path: Path) -> None:
    kept = add_model(cache, "org/Keep-Me", tmp_path)
    gone = add_model(cache, "org/Drop-Me", tmp_path)

    for pattern, answer in (("keep", "n"), ("drop", "y")):
        child = pexpect.spawn(sys.executable, ["-m", "mlxk2", "rm", pattern], env=env,
                              timeout=30, encoding="utf-8")
        child.expect(r"\[y/N\]")
        child.sendline(answer)
        child.expect(pexpect.EOF)
        child.close()

    assert kept.exists()
    assert not gone.exists()


def test_permission_failure_is_a_permission_error(
        cache: Path, env: dict[str, str], tmp_path: Path) -> None:
    folder = add_model(cache, "org/readonly", tmp_path)
    with read_only_dir(folder / "snapshots"):
        result = run_subprocess("rm", "org/readonly", "--json", env=env)

    assert result.code == 3
    assert result.json["error"]["type"] == "PermissionError"
    assert result.json["data"] == {"model": "org/readonly"}
    assert folder.exists()


def test_permission_failure_maps_to_exit_code_3(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    add_model(cache, "org/stuck", tmp_path)
    plan = plan_removal("org/stuck", root=cache)

    def refuse(path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("mlxk2.cache.files.shutil.rmtree", refuse)
    with pytest.raises(PermissionDeniedError) as denied:
        execute_removal(plan)

    assert denied.value.exit_code == 3
    assert denied.value.data == {"model": "org/stuck"}


def test_linked_model_folder_is_unlinked_without_touching_its_target(
        cache: Path, env: dict[str, str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    real = add_model(elsewhere, "org/linked", tmp_path)
    (cache / real.name).symlink_to(real)

    result = run_subprocess("rm", "org/linked", "--json", env=env)

    assert result.code == 0, result.stderr
    assert not (cache / real.name).exists()
    assert (real / "refs" / "main").is_file()


def test_json_mode_deletes_a_unique_fuzzy_match_like_the_spec_example(
        cache: Path, env: dict[str, str], tmp_path: Path) -> None:
    folder = add_model(cache, "mlx-community/Phi-3-mini-4k-instruct-4bit", tmp_path)

    result = run_subprocess("rm", "Phi-3-mini", "--json", env=env)

    assert result.code == 0, result.stderr
    assert result.json["data"]["model"] == "mlx-community/Phi-3-mini-4k-instruct-4bit"
    assert not folder.exists()


def test_dry_run_previews_without_deleting(
        cache: Path, env: dict[str, str], tmp_path: Path) -> None:
    folder = add_model(cache, "org/two-revs", tmp_path, OLD, NEW)

    result = run_subprocess("rm", f"org/two-revs@{OLD[:6]}", "--dry-run", "--json", env=env)

    assert result.code == 0, result.stderr
    assert result.json["data"] == {"model": "org/two-revs", "action": "would_delete",
                                   "message": f"Would delete org/two-revs@{OLD}",
                                   "locks_detected": False, "lock_files": [], "snapshot": OLD}
    assert sorted(p.name for p in (folder / "snapshots").iterdir()) == [OLD, NEW]


def test_a_file_where_the_model_folder_should_be_can_be_removed(hf_home) -> None:
    from tests.fixtures.cli import run_inprocess

    stray = hf_home / "hub" / "models--odd--repo-is-file"
    stray.write_text("not a folder")
    result = run_inprocess("rm", "odd/repo-is-file", "--force", "--json")
    assert result.code == 0, result.stdout
    assert result.json["data"]["action"] == "deleted"
    assert not stray.exists()


def test_a_bare_local_folder_name_is_refused_not_deleted(hf_home, tmp_path, monkeypatch) -> None:
    from tests.fixtures.cli import run_inprocess

    (tmp_path / "w1").mkdir()
    (tmp_path / "w1" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    result = run_inprocess("rm", "w1", "--force", "--json")
    assert (result.code, result.json["error"]["type"]) == (1, "ValidationError")
    assert (tmp_path / "w1" / "config.json").exists()
