"""Name resolution shared by every command."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlxk2.cache.layout import store_snapshot
from mlxk2.errors import AmbiguousMatchError, ModelNotFoundError, ValidationError
from mlxk2.resolve import resolve, split_revision, validate_model_name

NAMES = [
    "mlx-community/Llama-3.2-1B-Instruct-4bit",
    "mlx-community/Llama-3.2-3B-Instruct-4bit",
    "mlx-community/Phi-3-mini",
    "someone/Phi-3-mini-fork",
    "Qwen/Qwen3-0.6B",
]


@pytest.fixture
def named_cache(tmp_path: Path) -> Path:
    """A cache holding only names: resolution never reads weights."""
    root = tmp_path / "hub"
    for index, name in enumerate(NAMES):
        src = tmp_path / "src" / str(index)
        src.mkdir(parents=True)
        (src / "config.json").write_text(f'{{"n": {index}}}')
        store_snapshot(root, name, src, commit=f"{index:x}" * 40)
    src = tmp_path / "src" / "second"
    src.mkdir()
    (src / "config.json").write_text('{"n": "second"}')
    store_snapshot(root, "Qwen/Qwen3-0.6B", src, commit="4" + "e" * 39, set_main=False)
    return root


@pytest.mark.parametrize("spec, expected", [
    ("mlx-community/Phi-3-mini", "mlx-community/Phi-3-mini"),
    ("MLX-COMMUNITY/phi-3-mini", "mlx-community/Phi-3-mini"),
    ("Phi-3-mini", "mlx-community/Phi-3-mini"),
    ("fork", "someone/Phi-3-mini-fork"),
    ("qwen3", "Qwen/Qwen3-0.6B"),
    ("Llama-3.2-1B", "mlx-community/Llama-3.2-1B-Instruct-4bit"),
])
def test_resolves_exact_short_and_substring_names(named_cache, spec, expected) -> None:
    resolved = resolve(spec, named_cache)
    assert resolved.name == expected
    assert resolved.cached is True
    assert resolved.path is not None and (resolved.path / "config.json").exists()


def test_ambiguous_substring_lists_sorted_matches(named_cache) -> None:
    with pytest.raises(AmbiguousMatchError) as info:
        resolve("llama", named_cache)
    assert info.value.details["matches"] == sorted(NAMES[:2])


def test_unknown_name_is_model_not_found(named_cache) -> None:
    with pytest.raises(ModelNotFoundError):
        resolve("nothing-like-this", named_cache)


def test_refs_main_selects_the_snapshot_and_hash_prefix_overrides(named_cache) -> None:
    assert resolve("Qwen3", named_cache).commit == "4" * 40
    assert resolve("Qwen3@4ee", named_cache).commit == "4" + "e" * 39


def test_unknown_hash_lists_available_hashes(named_cache) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve("Qwen3@abc", named_cache)
    assert info.value.details["available_hashes"] == sorted(["4" * 40, "4" + "e" * 39])


def test_ambiguous_hash_prefix(named_cache) -> None:
    with pytest.raises(AmbiguousMatchError):
        resolve("Qwen3@4", named_cache)


def test_newest_snapshot_is_used_without_refs(named_cache) -> None:
    (named_cache / "models--Qwen--Qwen3-0.6B" / "refs" / "main").unlink()
    newest = named_cache / "models--Qwen--Qwen3-0.6B" / "snapshots" / ("4" + "e" * 39)
    newest.touch()
    import os
    os.utime(newest, (4_000_000_000, 4_000_000_000))
    assert resolve("Qwen3", named_cache).commit == newest.name


def test_refs_main_naming_a_missing_commit_falls_back_to_newest(named_cache) -> None:
    (named_cache / "models--Qwen--Qwen3-0.6B" / "refs" / "main").write_text("f" * 40)
    assert resolve("Qwen3", named_cache).commit in ("4" * 40, "4" + "e" * 39)


@pytest.mark.parametrize("name, fragment", [
    ("", "empty"),
    ("   ", "empty"),
    ("a" * 97, "too long: 97/96"),
    ("org//model", "bad segment"),
    ("org/", "bad segment"),
    ("org/../etc", "bad segment"),
    ("a/b/c", "expected 'org/name'"),
    ("org/na me", "bad segment"),
])
def test_invalid_names_are_validation_errors(name, fragment) -> None:
    with pytest.raises(ValidationError) as info:
        validate_model_name(name)
    assert fragment in info.value.message


def test_workspace_paths_resolve_uncached(tmp_path, monkeypatch) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    resolved = resolve("./ws")
    assert (resolved.name, resolved.cached, resolved.commit) == ("./ws", False, None)
    assert resolve(str(workspace)).path == workspace


def test_paths_that_are_not_model_folders_are_refused(tmp_path, monkeypatch) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    with pytest.raises(ValidationError):
        resolve("../../etc")
    with pytest.raises(ModelNotFoundError):
        resolve("./missing")


def test_split_revision_takes_hashes_and_refs() -> None:
    assert split_revision("model@e96") == ("model", "e96")
    assert split_revision("model@dev") == ("model", "dev")
    assert split_revision("model") == ("model", None)
    with pytest.raises(ValidationError):
        split_revision("model@")


def test_a_branch_ref_selects_its_snapshot(named_cache) -> None:
    refs = named_cache / "models--Qwen--Qwen3-0.6B" / "refs"
    (refs / "dev").write_text("4" + "e" * 39)
    assert resolve("Qwen3@dev", named_cache).commit == "4" + "e" * 39
    with pytest.raises(ModelNotFoundError):
        resolve("Qwen3@../../etc", named_cache)


def test_tab_completed_and_bare_local_folders_are_workspaces(tmp_path, monkeypatch) -> None:
    (tmp_path / "w1").mkdir()
    (tmp_path / "w1" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "hub"
    assert resolve("w1/", root).cached is False
    assert resolve("w1", root).name == "w1"


def test_names_listed_from_the_cache_always_resolve(tmp_path) -> None:
    root = tmp_path / "hub"
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    store_snapshot(root, "ünïcode-org/tiny chat ü 4bit", src)
    assert resolve("ünïcode-org/tiny chat ü 4bit", root).name == "ünïcode-org/tiny chat ü 4bit"
    with pytest.raises(ValidationError):
        resolve("other-org/tiny chat", root)


@pytest.mark.parametrize("spec, expected", [
    ("org/model@feat@2", ("org/model", "feat@2")),
    ("org/model@main", ("org/model", "main")),
    ("org/model", ("org/model", None)),
])
def test_cache_and_hub_paths_split_a_revision_at_the_first_at_sign(spec, expected) -> None:
    from mlxk2.ops._hub import parse_spec

    assert split_revision(spec) == expected
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["org/model@", "org/model@  "])
def test_cache_and_hub_paths_refuse_an_empty_revision(spec) -> None:
    from mlxk2.ops._hub import parse_spec

    with pytest.raises(ValidationError, match="Empty revision"):
        split_revision(spec)
    with pytest.raises(ValidationError, match="Empty revision"):
        parse_spec(spec)
