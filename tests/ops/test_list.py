"""list: the model object for every cached case, the JSON contract and the human table."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mlxk2.cache.layout import store_snapshot
from tests.fixtures.cache import BuiltCache, build_cache
from tests.fixtures.cache_cases import CASES
from tests.fixtures.cache_content import mlx_chat_files
from tests.fixtures.cli import run_inprocess

MODEL_FIELDS = {"name", "hash", "size_bytes", "last_modified", "framework", "model_type",
                "capabilities", "health", "runtime_compatible", "reason", "cached",
                "context_length"}


def _models(cache_env: BuiltCache, *args: str) -> dict[str, dict]:
    result = run_inprocess("list", *args, "--json")
    assert result.code == 0
    doc = result.json
    assert doc["data"]["count"] == len(doc["data"]["models"])
    return {m["name"]: m for m in doc["data"]["models"]}


def test_json_lists_every_model_with_both_checks(cache_env: BuiltCache) -> None:
    models = _models(cache_env)
    expected = {case.repo_id for case in CASES.values()}
    assert set(models) == expected
    for model in models.values():
        assert set(model) == MODEL_FIELDS
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", model["last_modified"])
        assert str(cache_env.root) not in str(model)  # no absolute paths leak


@pytest.mark.parametrize("key", sorted(CASES))
def test_each_case_gets_its_verdict(cache_env: BuiltCache, key: str) -> None:
    case = CASES[key]
    model = _models(cache_env)[case.repo_id]
    healthy = case.health == "healthy" or (case.root_readable and os.geteuid() == 0)
    assert (model["health"] == "healthy") is healthy
    if case.health == "healthy":
        assert model["runtime_compatible"] is case.runtime_compatible
        if case.reason:
            assert case.reason in model["reason"]
        if case.model_type:
            assert model["model_type"] == case.model_type
    elif not healthy:
        assert model["runtime_compatible"] is False
        assert model["reason"]


@pytest.mark.parametrize("key, framework, model_type, capabilities", [
    ("chat", "MLX", "chat", ["text-generation", "chat"]),
    ("base", "MLX", "base", ["text-generation"]),
    ("embedding", "MLX", "embedding", ["embeddings"]),
    ("vision", "MLX", "chat", ["text-generation", "chat", "vision"]),
    ("gguf", "GGUF", "chat", ["text-generation", "chat"]),
    ("pytorch", "PyTorch", None, None),
])
def test_framework_type_and_capabilities(cache_env, key, framework, model_type,
                                         capabilities) -> None:
    model = _models(cache_env)[CASES[key].repo_id]
    assert model["framework"] == framework
    if model_type:
        assert model["model_type"] == model_type
        assert model["capabilities"] == capabilities


def test_audio_models_report_audio(cache_env: BuiltCache) -> None:
    model = _models(cache_env)[CASES["audio"].repo_id]
    assert "audio" in model["capabilities"]
    assert "vision" not in model["capabilities"]


def test_embedding_models_stay_runtime_compatible(cache_env: BuiltCache) -> None:
    model = _models(cache_env)[CASES["embedding"].repo_id]
    assert (model["health"], model["runtime_compatible"], model["reason"]) == \
        ("healthy", True, None)


def test_size_is_the_real_bytes_of_the_selected_snapshot(hf_cache: Path, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name, content in mlx_chat_files().items():
        (src / name).write_bytes(content)
    store_snapshot(hf_cache, "org/sized", src)
    expected = sum(p.stat().st_size for p in src.iterdir())
    model = run_inprocess("list", "--json").json["data"]["models"][0]
    assert model["size_bytes"] == expected
    assert model["hash"] is not None and len(model["hash"]) == 40
    assert model["cached"] is True


def test_two_snapshots_select_refs_main(cache_env: BuiltCache) -> None:
    from tests.fixtures.cache_damage import COMMIT_OLD

    model = _models(cache_env)[CASES["two_snapshots"].repo_id]
    assert model["hash"] == COMMIT_OLD


def test_pattern_is_a_case_insensitive_substring(cache_env: BuiltCache) -> None:
    models = _models(cache_env, "TINY-CHAT")
    assert models
    assert all("tiny-chat" in name.lower() for name in models)


def test_empty_cache_gives_an_empty_list(hf_cache: Path) -> None:
    doc = run_inprocess("list", "--json").json
    assert doc["data"] == {"models": [], "count": 0}
    human = run_inprocess("list")
    assert human.stdout.strip() == "No models found."


def test_human_table_shows_runnable_models_by_default(cache_env: BuiltCache) -> None:
    result = run_inprocess("list")
    assert result.code == 0
    header = result.stdout.splitlines()[0].split()
    assert header == ["NAME", "ID", "SIZE", "MODIFIED", "TYPE", "HEALTH"]
    assert CASES["chat"].repo_id in result.stdout
    assert CASES["gguf"].repo_id not in result.stdout
    assert "use --all" in result.stdout
    assert "\033[" not in result.stdout  # NO_COLOR


def test_human_all_shows_every_model_with_reasons(cache_env: BuiltCache) -> None:
    result = run_inprocess("list", "--all")
    assert CASES["gguf"].repo_id in result.stdout
    assert "Framework GGUF not executable" in result.stdout
    assert "config.json missing" in result.stdout


def test_human_sizes_and_times_are_readable(cache_env: BuiltCache) -> None:
    line = next(line for line in run_inprocess("list").stdout.splitlines()
                if line.startswith(CASES["chat"].repo_id + " "))
    assert re.search(r"\b\d+(\.\d)?(B|KB|MB)\b", line)
    assert re.search(r"(just now|ago)", line)


def test_human_list_shows_exactly_the_models_run_or_embed_accepts(hf_cache: Path) -> None:
    from mlxk2.errors import MlxkError
    from mlxk2.ops.embed import check_embeddable
    from mlxk2.ops.run import check_runnable

    build_cache(hf_cache, ["chat", "embedding", "unsupported_arch"])
    shown = {line.split()[0] for line in run_inprocess("list").stdout.splitlines()[1:]
             if line and not line.startswith("(")}
    for key, check in (("chat", check_runnable), ("embedding", check_embeddable),
                       ("unsupported_arch", check_runnable)):
        name = CASES[key].repo_id
        try:
            check(name)
        except MlxkError:
            accepted = False
        else:
            accepted = True
        assert (name in shown) is accepted, name
    assert shown == {CASES["chat"].repo_id, CASES["embedding"].repo_id}


def test_human_all_names_why_a_model_is_not_runnable(hf_cache: Path) -> None:
    build_cache(hf_cache, ["unsupported_arch"])
    line = next(line for line in run_inprocess("list", "--all").stdout.splitlines()
                if line.startswith(CASES["unsupported_arch"].repo_id))
    assert CASES["unsupported_arch"].reason in line


def test_every_model_carries_its_context_length(cache_env: BuiltCache) -> None:
    models = _models(cache_env)
    assert models[CASES["chat"].repo_id]["context_length"] == 2048
    assert models[CASES["gguf"].repo_id]["context_length"] is None  # no config.json to read
