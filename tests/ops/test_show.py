"""show: the model object, metadata, files and config, by every kind of name."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures.cache import BuiltCache
from tests.fixtures.cache_cases import CASES
from tests.fixtures.cache_content import mlx_chat_files
from tests.fixtures.cache_damage import COMMIT_NEW
from tests.fixtures.cli import run_inprocess


def test_show_returns_model_and_metadata(cache_env: BuiltCache) -> None:
    result = run_inprocess("show", CASES["chat"].repo_id, "--json")
    assert result.code == 0
    data = result.json["data"]
    assert data["model"]["name"] == CASES["chat"].repo_id
    assert data["metadata"]["model_type"] == "llama"
    assert data["metadata"]["quantization"] == "4bit"
    assert isinstance(data["metadata"]["context_length"], int)
    assert "files" not in data and "config" not in data


def test_show_files_lists_names_human_sizes_and_types(cache_env: BuiltCache) -> None:
    data = run_inprocess("show", CASES["sharded"].repo_id, "--files", "--json").json["data"]
    types = {f["name"]: f["type"] for f in data["files"]}
    assert types["config.json"] == "config"
    assert types["tokenizer.json"] == "tokenizer"
    assert types["model.safetensors.index.json"] == "config"
    assert types["model-00001-of-00002.safetensors"] == "weights"
    assert all(f["size"][-1] == "B" for f in data["files"])


def test_show_config_includes_raw_config(cache_env: BuiltCache) -> None:
    data = run_inprocess("show", CASES["chat"].repo_id, "--config", "--json").json["data"]
    assert data["config"]["model_type"] == "llama"


def test_show_by_hash_selects_that_snapshot(cache_env: BuiltCache) -> None:
    name = CASES["two_snapshots"].repo_id
    data = run_inprocess("show", f"{name}@{COMMIT_NEW[:6]}", "--json").json["data"]
    assert data["model"]["hash"] == COMMIT_NEW


def test_unknown_hash_lists_available_hashes(cache_env: BuiltCache) -> None:
    result = run_inprocess("show", f"{CASES['two_snapshots'].repo_id}@abcdef", "--json")
    doc = result.json
    assert result.code == 1
    assert doc["error"]["type"] == "model_not_found"
    assert COMMIT_NEW in doc["error"]["available_hashes"]


def test_ambiguous_name_lists_matches(cache_env: BuiltCache) -> None:
    result = run_inprocess("show", "tiny", "--json")
    doc = result.json
    assert result.code == 1
    assert doc["error"]["type"] == "ambiguous_match"
    assert doc["error"]["matches"] == sorted(doc["error"]["matches"])
    assert doc["data"] is None


def test_not_found_and_too_long_names(cache_env: BuiltCache) -> None:
    missing = run_inprocess("show", "no-such-model-anywhere", "--json")
    assert (missing.code, missing.json["error"]["type"]) == (1, "model_not_found")
    long = run_inprocess("show", "x" * 97, "--json")
    assert (long.code, long.json["error"]["type"]) == (1, "ValidationError")
    assert "97/96" in long.json["error"]["message"]


def test_workspace_path_is_uncached_with_null_hash(tmp_path: Path, monkeypatch) -> None:
    workspace = tmp_path / "my-model"
    workspace.mkdir()
    for name, content in mlx_chat_files().items():
        (workspace / name).write_bytes(content)
    monkeypatch.chdir(tmp_path)
    model = run_inprocess("show", "./my-model", "--json").json["data"]["model"]
    assert (model["name"], model["hash"], model["cached"]) == ("./my-model", None, False)
    assert model["health"] == "healthy"


def test_metadata_reads_nested_text_config(tmp_path: Path, monkeypatch) -> None:
    workspace = tmp_path / "nested"
    workspace.mkdir()
    for name, content in mlx_chat_files().items():
        (workspace / name).write_bytes(content)
    config = json.loads((workspace / "config.json").read_text())
    text = {k: config.pop(k) for k in ("hidden_size", "num_hidden_layers")
            if k in config}
    config["text_config"] = {**text, "max_position_embeddings": 8192}
    config.pop("max_position_embeddings", None)
    (workspace / "config.json").write_text(json.dumps(config))
    data = run_inprocess("show", str(workspace), "--json").json["data"]
    meta = data["metadata"]
    assert meta["context_length"] == 8192
    assert data["model"]["context_length"] == 8192
    assert meta["hidden_size"] == text["hidden_size"]


def test_human_show_is_a_readable_summary(cache_env: BuiltCache) -> None:
    result = run_inprocess("show", CASES["chat"].repo_id, "--files")
    assert result.code == 0
    assert "Framework" in result.stdout and "MLX" in result.stdout
    assert "FILE" in result.stdout and "config.json" in result.stdout


def test_human_error_is_one_line_on_stderr(cache_env: BuiltCache) -> None:
    result = run_inprocess("show", "tiny")
    assert result.code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: Multiple models match 'tiny'")


def test_file_kinds_follow_the_integrity_rules(tmp_path: Path, monkeypatch) -> None:
    workspace = tmp_path / "kinds"
    workspace.mkdir()
    for name, content in mlx_chat_files().items():
        (workspace / name).write_bytes(content)
    for extra in ("training_args.bin", "merges.txt", "o200k.tiktoken", "chat_template.jinja"):
        (workspace / extra).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    files = run_inprocess("show", "./kinds", "--files", "--json").json["data"]["files"]
    kinds = {f["name"]: f["type"] for f in files}
    assert kinds["training_args.bin"] == "other"  # not weights, as health also judges
    assert kinds["merges.txt"] == "tokenizer"
    assert kinds["o200k.tiktoken"] == "tokenizer"
    assert kinds["chat_template.jinja"] == "config"


def test_human_show_lists_files_with_human_sizes(cache_env: BuiltCache) -> None:
    text = run_inprocess("show", CASES["chat"].repo_id, "--files").stdout
    line = next(line for line in text.splitlines() if line.startswith("config.json "))
    assert line.split()[1].endswith("B") and line.split()[2] == "config"
