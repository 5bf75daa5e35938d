"""Loading from local folders: stop tokens, context length, no Hub fallback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mlxk2.engine.load import context_length, load_model
from mlxk2.errors import ModelIncompatibleError, ModelNotFoundError


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
