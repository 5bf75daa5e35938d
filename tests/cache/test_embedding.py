"""Which embedding models mlxk2 can embed with, as ``list`` reports them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlxk2.cache.embedding import embedding_pipeline
from mlxk2.cache.inspect import inspect_model
from mlxk2.resolve import resolve
from tests.fixtures.cache_content import bert_embedding_files, safetensors_bytes
from tests.fixtures.cli import run_inprocess
from tests.fixtures.embedding import MINILM, MiniLmCache


def _plain_bert() -> dict[str, bytes]:
    """The fixture encoder without its MLX-tagged model card: a plain Hub repo."""
    files = bert_embedding_files()
    del files["README.md"]
    return files


def _folder(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir(parents=True)
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(content)
    return path


def _inspect(path: Path):
    return inspect_model(resolve(str(path)))


def test_plain_safetensors_encoder_is_runnable_on_mlx(minilm_env: MiniLmCache) -> None:
    models = run_inprocess("list", "--json").json["data"]["models"]
    model = next(m for m in models if m["name"] == MINILM)
    assert (model["framework"], model["model_type"], model["capabilities"]) == \
        ("MLX", "embedding", ["embeddings"])
    assert (model["health"], model["runtime_compatible"], model["reason"]) == \
        ("healthy", True, None)
    assert MINILM in run_inprocess("list").stdout  # the human table shows runnable models


def test_bin_only_encoder_stays_pytorch_and_refused(tmp_path: Path) -> None:
    files = _plain_bert()
    files["pytorch_model.bin"] = files.pop("model.safetensors")
    info = _inspect(_folder(tmp_path / "bin-only", files))
    assert (info.model_type, info.framework, info.runtime_compatible) == \
        ("embedding", "PyTorch", False)
    assert info.reason == "Embedding weights are PyTorch .bin only; mlxk2 embeds from safetensors"
    assert not info.embeddable and not info.runnable


def test_encoder_architecture_outside_the_bert_family_is_refused(tmp_path: Path) -> None:
    files = _plain_bert()
    files["config.json"] = json.dumps({"model_type": "mpnet", "hidden_size": 16}).encode()
    info = _inspect(_folder(tmp_path / "mpnet", files))
    assert not info.runtime_compatible and info.framework == "PyTorch"
    assert info.reason == ("Embedding architecture 'mpnet' is not supported by mlxk2's encoder "
                           "(supported: bert, roberta, xlm-roberta)")


def test_an_encoder_without_tokenizer_json_is_refused(tmp_path: Path) -> None:
    files = _plain_bert()
    del files["tokenizer.json"]
    assert _inspect(_folder(tmp_path / "slow-tok", files)).reason == \
        "No tokenizer.json: embedding needs a fast tokenizer"


def _modules(*kinds: str) -> bytes:
    return json.dumps([{"idx": i, "name": str(i), "path": path,
                        "type": f"sentence_transformers.models.{kind}"}
                       for i, (kind, path) in enumerate(
                           (k, {"Pooling": "1_Pooling", "Normalize": "2_Normalize"}.get(k, ""))
                           for k in kinds)]).encode()


@pytest.mark.parametrize("flags, pooling", [
    ({"pooling_mode_mean_tokens": True}, "mean"),
    ({"pooling_mode_cls_token": True}, "cls"),
    ({"pooling_mode_lasttoken": True}, "lasttoken"),
    ({"pooling_mode_max_tokens": True}, "max"),
])
def test_pooling_follows_the_pooling_config(tmp_path: Path, flags: dict, pooling: str) -> None:
    folder = _folder(tmp_path / "m", {
        "modules.json": _modules("Transformer", "Pooling", "Normalize"),
        "1_Pooling/config.json": json.dumps({"word_embedding_dimension": 16, **flags}).encode(),
        "sentence_bert_config.json": b'{"max_seq_length": 128}',
    })
    assert embedding_pipeline(folder) == embedding_pipeline(folder).__class__(
        pooling=pooling, normalize=True, max_seq_length=128)


def test_unsupported_pipelines_name_their_problem(tmp_path: Path) -> None:
    dense = _folder(tmp_path / "dense", {"modules.json": _modules("Transformer", "Dense")})
    assert embedding_pipeline(dense).problem == \
        "the sentence-transformers module 'sentence_transformers.models.Dense' is not supported"
    weighted = _folder(tmp_path / "weighted", {
        "modules.json": _modules("Transformer", "Pooling"),
        "1_Pooling/config.json": b'{"pooling_mode_weightedmean_tokens": true}',
    })
    assert embedding_pipeline(weighted).problem == \
        "pooling 'pooling_mode_weightedmean_tokens' is not supported"
    both = _folder(tmp_path / "both", {
        "modules.json": _modules("Transformer", "Pooling"),
        "1_Pooling/config.json": b'{"pooling_mode_cls_token": true, '
                                 b'"pooling_mode_mean_tokens": true}',
    })
    assert embedding_pipeline(both).problem == "combined pooling (mean + cls) is not supported"


def test_a_folder_without_modules_json_gets_mean_pooling(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "plain", {"model.safetensors": safetensors_bytes({})})
    pipeline = embedding_pipeline(folder)
    assert (pipeline.pooling, pipeline.normalize, pipeline.problem) == ("mean", False, None)
