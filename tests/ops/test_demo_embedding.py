"""``demo --embedding``: a tiny random-weight BERT that list, embed and serve accept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlxk2.engine.embed import hf_weight_name, load_encoder, sanitize
from mlxk2.ops.demo import DEMO_EMBEDDING
from tests.fixtures.cli import run_inprocess


def test_demo_embedding_model_is_listed_and_embeds(hf_home: Path) -> None:
    built = run_inprocess("demo", "--embedding", "--json")
    assert built.code == 0, built.stdout
    assert built.json["data"]["model"] == DEMO_EMBEDDING
    model = run_inprocess("list", "--json").json["data"]["models"][0]
    assert (model["name"], model["framework"], model["model_type"], model["runtime_compatible"]) \
        == (DEMO_EMBEDDING, "MLX", "embedding", True)
    data = run_inprocess("embed", "demo-embed", "Hello", "world", "--json").json["data"]
    assert (data["dimensions"], data["count"], data["normalized"]) == (64, 2, True)
    first, second = (np.array(r["embedding"]) for r in data["records"])
    assert abs(np.linalg.norm(first) - 1) < 1e-5 and not np.allclose(first, second)


def test_demo_weights_use_hugging_face_names(hf_home: Path) -> None:
    run_inprocess("demo", "--embedding")
    snapshot = next((hf_home / "hub").glob("models--mlxk2--demo-embed/snapshots/*"))
    import mlx.core as mx

    names = set(mx.load(str(snapshot / "model.safetensors")))
    assert "encoder.layer.1.attention.self.query.weight" in names
    assert "encoder.layer.0.output.LayerNorm.bias" in names
    encoder = load_encoder(snapshot)
    assert (encoder.pooling, encoder.normalize, encoder.max_tokens) == ("mean", True, 128)


def test_weight_names_round_trip_through_sanitize() -> None:
    ours = ["layers.0.attention.query.weight", "layers.0.attention_out.bias",
            "layers.0.attention_norm.weight", "layers.3.ffn_in.weight", "layers.3.ffn_out.bias",
            "layers.3.ffn_norm.weight", "embeddings.norm.bias",
            "embeddings.word_embeddings.weight"]
    import mlx.core as mx

    assert list(sanitize({hf_weight_name(n): mx.zeros(1) for n in ours})) == ours


def test_embedding_demo_takes_no_chat_model_options(hf_home: Path) -> None:
    result = run_inprocess("demo", "--embedding", "--quantize", "4", "--json")
    assert result.code == 1
    assert result.json["error"]["type"] == "ValidationError"
