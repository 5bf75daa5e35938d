"""Model inspection: framework, type and capability detection, and link safety."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mlxk2.cache.inspect import inspect_model
from mlxk2.cache.layout import ResolvedModel, store_snapshot
from mlxk2.resolve import resolve
from tests.fixtures.cache_content import mlx_chat_files


def _workspace(path: Path, files: dict[str, bytes], **changes: bytes | None) -> ResolvedModel:
    path.mkdir(parents=True, exist_ok=True)
    for name, content in {**files, **changes}.items():
        if content is not None:
            (path / name).write_bytes(content)
    return ResolvedModel(name=str(path), path=path, cached=False)


def _unquantized(files: dict[str, bytes]) -> bytes:
    config = json.loads(files["config.json"])
    config.pop("quantization", None)
    return json.dumps(config).encode()


def test_plain_safetensors_without_mlx_markers_is_pytorch(tmp_path: Path) -> None:
    files = mlx_chat_files()
    files.pop("README.md", None)
    info = inspect_model(_workspace(tmp_path / "m", files, **{"config.json": _unquantized(files)}))
    assert info.framework == "PyTorch"
    assert info.reason == "Framework PyTorch not executable with mlx-lm (requires MLX)"


@pytest.mark.parametrize("readme", [
    "---\nlibrary_name: mlx\n---\n",
    "---\ntags:\n- text-generation\n- mlx\n---\n",
])
def test_readme_front_matter_marks_mlx(tmp_path: Path, readme: str) -> None:
    files = mlx_chat_files()
    info = inspect_model(_workspace(tmp_path / "m", files, **{
        "config.json": _unquantized(files), "README.md": readme.encode()}))
    assert info.framework == "MLX"


def test_mlx_mentioned_outside_front_matter_does_not_count(tmp_path: Path) -> None:
    files = mlx_chat_files()
    info = inspect_model(_workspace(tmp_path / "m", files, **{
        "config.json": _unquantized(files),
        "README.md": b"---\nlibrary_name: transformers\n---\nConvert with mlx.\n"}))
    assert info.framework == "PyTorch"


def test_chat_template_file_makes_a_chat_model(tmp_path: Path) -> None:
    files = mlx_chat_files()
    config = json.loads(files["tokenizer_config.json"])
    config.pop("chat_template", None)
    info = inspect_model(_workspace(tmp_path / "m", files, **{
        "tokenizer_config.json": json.dumps(config).encode(),
        "chat_template.jinja": b"{{ messages }}"}))
    assert (info.model_type, info.capabilities) == ("chat", ("text-generation", "chat"))


def test_sentence_transformers_layout_is_an_embedding_model(tmp_path: Path) -> None:
    info = inspect_model(_workspace(tmp_path / "m", mlx_chat_files(),
                                    **{"modules.json": b"[]"}))
    assert (info.model_type, info.capabilities) == ("embedding", ("embeddings",))
    assert not info.runnable


def test_a_snapshot_link_leaving_the_cache_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "hub"
    src = tmp_path / "src"
    _workspace(src, mlx_chat_files())
    snapshot = store_snapshot(root, "org/escape", src)
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (snapshot / "tokenizer.json").unlink()
    (snapshot / "tokenizer.json").symlink_to(os.path.relpath(outside, snapshot))
    info = inspect_model(resolve("org/escape", root))
    assert info.health == "unhealthy"
    assert info.reason == "Links point outside the cache: tokenizer.json"
    assert str(tmp_path) not in info.reason


def test_runnable_needs_health_runtime_and_text_generation(tmp_path: Path) -> None:
    info = inspect_model(_workspace(tmp_path / "m", mlx_chat_files()))
    assert info.runnable
    broken = inspect_model(_workspace(tmp_path / "b", mlx_chat_files(),
                                      **{"config.json": b"{"}))
    assert not broken.runnable
    assert broken.reason == "config.json is not valid JSON"
