"""``demo``: a valid, runnable MLX chat model built offline, in the cache or a workspace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlxk2.cache.inspect import inspect_model
from mlxk2.errors import ValidationError
from mlxk2.ops.demo import demo_repo_id, install_demo
from mlxk2.resolve import resolve
from tests.fixtures.cli import run_inprocess
from tests.fixtures.models import CHAT, CHAT_4BIT
from tests.fixtures.schema import assert_valid_envelope


def test_demo_in_cache_is_a_healthy_runnable_mlx_chat_model(demo_env):
    info = inspect_model(resolve("demo-chat"))
    assert info.name == CHAT
    assert (info.framework, info.model_type, info.health) == ("MLX", "chat", "healthy")
    assert info.runtime_compatible and info.runnable
    assert "chat" in info.capabilities


def test_quantized_demo_records_its_quantization(demo_cache):
    config = json.loads((demo_cache.paths[CHAT_4BIT] / "config.json").read_text())
    assert config["quantization"]["bits"] == 4


def test_tokenizer_config_is_classic_with_inline_template(demo_cache):
    config = json.loads((demo_cache.paths[CHAT] / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert "<|im_start|>" in config["chat_template"]


def test_build_is_deterministic(tmp_path: Path, demo_cache):
    first = install_demo(path=tmp_path / "a")
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        assert (first.path / name).read_bytes() == (demo_cache.paths[CHAT] / name).read_bytes()


def test_workspace_target_must_be_new_or_empty(tmp_path: Path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ValidationError):
        install_demo(path=tmp_path / "taken")


def test_unknown_preset_is_a_validation_error(tmp_path: Path):
    with pytest.raises(ValidationError):
        install_demo(path=tmp_path / "x", preset="huge")


def test_variant_names_are_fixed():
    assert demo_repo_id() == "mlxk2/demo-chat"
    assert demo_repo_id(quantize_bits=4) == "mlxk2/demo-chat-4bit"
    assert demo_repo_id(preset="mid", chat_template=False) == "mlxk2/demo-base-mid"


def test_cli_demo_installs_into_the_cache_and_list_shows_it(hf_home):
    built = run_inprocess("demo", "--random", "--json")
    assert built.code == 0, built.stderr
    assert built.json["data"]["model"] == CHAT
    listed = run_inprocess("list", "--json")
    assert [m["name"] for m in listed.json["data"]["models"]] == [CHAT]
    human = run_inprocess("demo", "--random")
    assert "mlxk2 run demo-chat" in human.stdout


def test_cli_demo_into_a_workspace_suggests_a_path_run_accepts(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    built = run_inprocess("demo", "--random", "--path", "my-demo")
    assert built.code == 0, built.stderr
    assert 'mlxk2 run ./my-demo "Hello"' in built.stdout
    assert resolve("./my-demo").path == Path("my-demo")


@pytest.mark.parametrize(("typed", "reported"), [("./dm", "./dm"), ("dm", "./dm"),
                                                  ("sub/dm/", "sub/dm/")])
def test_cli_demo_reports_the_workspace_as_typed_so_run_accepts_it(
    tmp_path: Path, monkeypatch, typed, reported
):
    monkeypatch.chdir(tmp_path)
    built = run_inprocess("demo", "--random", "--path", typed, "--json")
    assert built.code == 0, built.stderr
    assert_valid_envelope(built.json)
    assert built.json["data"]["model"] == reported
    assert resolve(reported).name == reported
    again = run_inprocess("demo", "--random", "--path", typed, "--json")
    assert again.code == 1
    assert again.json["error"]["message"] == f"'{reported}' exists and is not an empty folder"
