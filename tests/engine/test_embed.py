"""The MLX encoder on the real all-MiniLM-L6-v2, checked against sentence-transformers."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from mlxk2.engine.embed import l2_normalize, load_encoder, plan_batches, pool, sanitize
from mlxk2.errors import ModelIncompatibleError
from tests.fixtures.embedding import minilm_folder, minilm_reference


def _cosines(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    return (ours * theirs).sum(-1) / (np.linalg.norm(ours, axis=-1) *
                                      np.linalg.norm(theirs, axis=-1))


def test_embeddings_equal_sentence_transformers_reference(minilm: Any) -> None:
    ref = minilm_reference()
    tokens = minilm.tokenize(ref["sentences"])
    ours = minilm.embed([t.ids for t in tokens])
    theirs = np.array(ref["embeddings"], dtype=np.float32)
    assert ours.shape == theirs.shape == (len(ref["sentences"]), 384)
    assert np.all(1 - _cosines(ours, theirs) < 1e-5)
    assert np.abs(ours - theirs).max() < 1e-4
    assert [len(t.ids) for t in tokens] == ref["tokens"]


def test_pooled_vectors_without_normalize_equal_the_reference(minilm: Any) -> None:
    ref = minilm_reference()
    ours = minilm.embed([t.ids for t in minilm.tokenize(ref["sentences"])], normalize=False)
    theirs = np.array(ref["pooled"], dtype=np.float32)
    assert np.all(1 - _cosines(ours, theirs) < 1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), np.linalg.norm(theirs, axis=-1),
                               rtol=1e-5)
    assert np.linalg.norm(ours, axis=-1).min() > 1.5  # really not normalised


def test_similar_meanings_are_closer_than_unrelated_ones(minilm: Any) -> None:
    cat, feline, stocks = minilm.embed([t.ids for t in minilm.tokenize(
        ["A cat sits on the mat", "A feline rests on a rug", "Stock markets fell today"])])
    assert cat @ feline > cat @ stocks + 0.3
    assert cat @ feline > feline @ stocks + 0.3


def test_a_text_embeds_the_same_alone_and_in_a_padded_batch(minilm: Any) -> None:
    texts = ["short", "a somewhat longer sentence with quite a few more words in it",
             " ".join(["padding"] * 24), "mid length text here"]
    ids = [t.ids for t in minilm.tokenize(texts)]
    together = minilm.forward(ids)
    for i, one in enumerate(ids):
        alone = minilm.forward([one])[0]
        assert np.abs(alone - together[i]).max() < 1e-5, texts[i]


def test_over_long_text_is_cut_to_max_seq_length_keeping_the_end_token(minilm: Any) -> None:
    long, short = minilm.tokenize([" ".join(["word"] * 400), "two words"])
    assert minilm.max_tokens == 256
    assert len(long.ids) == 256 and long.truncated
    assert long.ids[0] == 101 and long.ids[-1] == 102  # [CLS] ... [SEP]
    assert not short.truncated


def test_batches_respect_size_and_token_budget_longest_first_without_much_padding() -> None:
    lengths = [5, 50, 10, 50, 7, 300, 9]
    batches = plan_batches(lengths, max_batch=2, token_budget=120)
    assert batches == [[5], [1, 3], [2, 6], [4, 0]]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 2
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 120
        assert max(lengths[i] for i in batch) <= 2 * min(lengths[i] for i in batch)


def test_pooling_modes_ignore_padding() -> None:
    import mlx.core as mx

    hidden = mx.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = mx.array([[True, True, False]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 4.0]]
    assert pool(hidden, mask, "lasttoken").tolist() == [[3.0, 4.0]]
    assert np.allclose(np.array(l2_normalize(mx.array([[3.0, 4.0]]))), [[0.6, 0.8]])


def test_task_model_weight_names_map_onto_the_encoder() -> None:
    import mlx.core as mx

    names = sanitize({
        "bert.encoder.layer.0.attention.self.query.weight": mx.zeros(1),
        "bert.encoder.layer.0.attention.output.LayerNorm.bias": mx.zeros(1),
        "bert.encoder.layer.0.output.dense.weight": mx.zeros(1),
        "bert.embeddings.LayerNorm.weight": mx.zeros(1),
        "bert.embeddings.position_ids": mx.zeros(1),
        "bert.pooler.dense.weight": mx.zeros(1),
        "cls.predictions.bias": mx.zeros(1),
    })
    assert sorted(names) == [
        "embeddings.norm.weight", "layers.0.attention.query.weight",
        "layers.0.attention_norm.bias", "layers.0.ffn_out.weight",
    ]


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Any) -> None:
    import json
    import shutil

    folder = tmp_path / "bad"
    shutil.copytree(minilm_folder(), folder)
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = 256
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelIncompatibleError, match="Cannot load"):
        load_encoder(folder, name="bad")


def test_a_multi_megabyte_text_is_cut_before_it_is_tokenised(minilm: Any) -> None:
    long_text = "hello world, this is a test. " * 134_000  # 3.9 MB: 5 s and more to tokenise
    began = time.perf_counter()
    whole, head = minilm.tokenize([long_text, long_text[:5000]])
    assert time.perf_counter() - began < 1.0
    assert whole == head and whole.truncated and len(whole.ids) == minilm.max_tokens
