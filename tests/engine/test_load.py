"""Loading from local folders: stop tokens, context length, no Hub fallback."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from mlxk2.engine.load import context_length, load_model
from mlxk2.errors import ModelIncompatibleError, ModelNotFoundError, ModelUnhealthyError
from tests.fixtures.cli import run_inprocess
from tests.fixtures.schema import assert_valid_envelope


def test_context_length_reads_common_keys_and_nested_text_config():
    assert context_length({"max_position_embeddings": 4096}) == 4096
    assert context_length({"n_positions": 1024}) == 1024
    assert context_length({"text_config": {"max_position_embeddings": 8192}}) == 8192
    assert context_length({"max_seq_len": 512, "text_config": {"n_ctx": 99}}) == 512
    assert context_length({"hidden_size": 64}) is None


def test_missing_folder_fails_fast_without_the_hub(tmp_path: Path):
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError):
        load_model(tmp_path / "does-not-exist")
    assert time.perf_counter() - started < 1.0


def test_folder_mlx_lm_cannot_build_is_incompatible(tmp_path: Path):
    (tmp_path / "config.json").write_text('{"model_type": "no_such_arch_xyz"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelIncompatibleError):
        load_model(tmp_path)


def test_chat_model_stops_at_eos_and_end_of_turn(tiny_chat):
    vocab = tiny_chat.tokenizer.get_vocab()
    assert {vocab["<|endoftext|>"], vocab["<|im_end|>"]} <= tiny_chat.stop_token_ids
    assert set(tiny_chat.tokenizer.eos_token_ids) == set(tiny_chat.stop_token_ids)
    assert tiny_chat.context_length == 2048


def test_end_of_turn_token_in_vocab_is_a_stop_even_when_config_omits_it(tiny_base):
    assert tiny_base.config["eos_token_id"] == [tiny_base.tokenizer.get_vocab()["<|endoftext|>"]]
    assert tiny_base.tokenizer.get_vocab()["<|im_end|>"] in tiny_base.stop_token_ids


def test_other_special_tokens_are_hidden_from_output(tiny_chat):
    assert set(tiny_chat.hidden_tokens.values()) == {"<|im_start|>"}


def _broken_copy(source: Path, dest: Path, change) -> Path:
    """A copy of a demo model whose config.json mlx-lm cannot build."""
    shutil.copytree(source, dest)
    config = json.loads((dest / "config.json").read_text())
    change(config)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def _nest_in_text_config(config: dict) -> None:
    text = {k: config.pop(k) for k in list(config) if k not in ("model_type", "architectures")}
    config["text_config"] = text


def _bad_hidden_size(config: dict) -> None:
    config["hidden_size"] = "big"


@pytest.mark.parametrize("change", [_nest_in_text_config, _bad_hidden_size])
def test_config_mlx_lm_cannot_build_is_one_line_naming_the_repo_not_the_hash(
    demo_cache, tmp_path: Path, change
):
    snapshot = tmp_path / "models--org--broken" / "snapshots" / "0123abcd"
    _broken_copy(demo_cache.paths["mlxk2/demo-chat"], snapshot, change)
    with pytest.raises(ModelIncompatibleError) as info:
        load_model(snapshot)
    message = info.value.message
    assert message.startswith("mlx-lm cannot load 'org/broken': ")
    assert "0123abcd" not in message
    assert "\n" not in message
    assert len(message) < 300


def test_cli_run_of_an_unbuildable_workspace_is_model_incompatible(demo_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _broken_copy(demo_env.paths["mlxk2/demo-chat"], tmp_path / "nest", _nest_in_text_config)
    result = run_inprocess("run", "./nest", "hi", "--json")
    assert result.code == 1
    assert_valid_envelope(result.json)
    error = result.json["error"]
    assert error["type"] == "model_incompatible"
    assert error["message"].startswith("mlx-lm cannot load './nest': ")
    assert "\n" not in error["message"]


def test_context_length_skips_a_key_that_holds_no_positive_whole_number():
    assert context_length({"max_position_embeddings": "big", "n_positions": 1024}) == 1024
    assert context_length({"max_position_embeddings": True, "n_ctx": 512}) == 512
    assert context_length({"max_position_embeddings": 0}) is None


def test_show_and_load_report_the_same_context_length(demo_cache, tmp_path: Path,
                                                      monkeypatch):
    from tests.fixtures.models import CHAT

    workspace = tmp_path / "ctx"
    shutil.copytree(demo_cache.paths[CHAT], workspace)
    config = json.loads((workspace / "config.json").read_text())
    del config["max_position_embeddings"]
    config.update(n_positions=1536, max_sequence_length=640, seq_length=320)
    (workspace / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)

    shown = run_inprocess("show", "./ctx", "--json").json["data"]["metadata"]
    loaded = load_model(workspace)

    assert shown["context_length"] == loaded.context_length == 1536


@pytest.fixture
def chat_copy(demo_cache, tmp_path: Path) -> Path:
    """A workspace copy of the demo chat model, free to damage."""
    from tests.fixtures.models import CHAT

    return Path(shutil.copytree(demo_cache.paths[CHAT], tmp_path / "ws"))


def test_a_tokenizer_json_that_is_no_tokenizer_is_unhealthy_and_named(chat_copy: Path):
    (chat_copy / "tokenizer.json").write_text('{"a": 1}')
    with pytest.raises(ModelUnhealthyError, match=r"tokenizer\.json is not a tokenizer"):
        load_model(chat_copy)


def test_a_tokenizer_the_library_rejects_is_incompatible_and_named(chat_copy: Path):
    (chat_copy / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
    with pytest.raises(ModelIncompatibleError) as info:
        load_model(chat_copy)
    assert "from tokenizer.json" in info.value.message
    assert "Exception" not in info.value.message


def test_health_and_run_report_a_broken_tokenizer_json_not_an_internal_error(chat_copy: Path,
                                                                             monkeypatch):
    (chat_copy / "tokenizer.json").write_text('{"a": 1}')
    monkeypatch.chdir(chat_copy.parent)
    health = run_inprocess("health", "./ws", "--json").json
    assert health["data"]["unhealthy"][0]["reason"].startswith("tokenizer.json is not a tokenizer")
    run = run_inprocess("run", "./ws", "hi", "--json").json
    assert run["error"]["type"] == "model_unhealthy"
    assert "tokenizer.json" in run["error"]["message"]
