"""``embed`` on the real all-MiniLM-L6-v2: output formats, options and refusals."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.cache_content import bert_embedding_files
from tests.fixtures.cli import REPO_ROOT, run_inprocess
from tests.fixtures.embedding import MINILM, MiniLmCache, minilm_reference
from tests.fixtures.models import CHAT, DemoCache

CAT, FELINE, STOCKS = "A cat sits on the mat", "A feline rests on a rug", "Stock markets fell today"


def _reference(text: str, key: str = "embeddings") -> np.ndarray:
    ref = minilm_reference()
    return np.array(ref[key][ref["sentences"].index(text)])


def _error(result) -> dict:  # type: ignore[no-untyped-def]
    assert result.code != 0
    doc = result.json
    assert doc["status"] == "error" and doc["command"] == "embed"
    return doc["error"]


def test_json_records_validate_and_equal_the_reference(minilm_env: MiniLmCache) -> None:
    result = run_inprocess("embed", MINILM, CAT, STOCKS, "--json")
    assert result.code == 0, result.stdout
    data = result.json["data"]
    assert (data["model"], data["dimensions"], data["count"], data["truncated"]) == \
        (MINILM, 384, 2, 0)
    assert data["normalized"] is True
    for record, text in zip(data["records"], (CAT, STOCKS), strict=True):
        assert record["text"] == text
        assert record["metadata"] == {
            "model": MINILM, "dimensions": 384,
            "content_hash": "sha256:" + hashlib.sha256(text.encode()).hexdigest(),
        }
        assert float(np.dot(record["embedding"], _reference(text))) > 1 - 1e-5
    assert data["usage"]["prompt_tokens"] == 8 + 6


def test_text_output_is_one_line_per_text_with_values_and_norm(minilm_env: MiniLmCache) -> None:
    result = run_inprocess("embed", "all-MiniLM", CAT, FELINE)
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    first = ", ".join(f"{x:+.4f}" for x in _reference(CAT)[:4])
    assert lines[0].startswith(CAT) and f"[{first}, …]" in lines[0]
    assert lines[0].endswith("dim=384  norm=1.0000")
    assert result.stderr == ""


def test_file_and_stdin_give_one_text_per_line_skipping_blank_lines(
        minilm_env: MiniLmCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text(f"{CAT}\n\n{FELINE}\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{STOCKS}\n"))
    result = run_inprocess("embed", MINILM, "-", "--file", str(texts), "--json")
    assert [r["text"] for r in result.json["data"]["records"]] == [STOCKS, CAT, FELINE]


def test_jsonl_streams_records_and_no_progress_bar_off_a_terminal(
        minilm_env: MiniLmCache) -> None:
    result = run_inprocess("embed", MINILM, CAT, FELINE, STOCKS, "--format", "jsonl",
                           "--batch", "2")
    assert result.code == 0 and result.stderr == ""
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == [CAT, FELINE, STOCKS]
    assert all(len(r["embedding"]) == r["metadata"]["dimensions"] == 384 for r in records)


def test_dimensions_keep_the_first_values_renormalised(minilm_env: MiniLmCache) -> None:
    record = run_inprocess("embed", MINILM, CAT, "--dimensions", "8", "--json"
                           ).json["data"]["records"][0]
    head = _reference(CAT)[:8]
    np.testing.assert_allclose(record["embedding"], head / np.linalg.norm(head), atol=1e-5)
    assert record["metadata"]["dimensions"] == 8


def test_no_normalize_gives_the_pooled_vector(minilm_env: MiniLmCache) -> None:
    data = run_inprocess("embed", MINILM, CAT, "--no-normalize", "--json").json["data"]
    assert data["normalized"] is False
    np.testing.assert_allclose(data["records"][0]["embedding"], _reference(CAT, "pooled"),
                               atol=1e-4)


def test_over_long_text_is_cut_and_counted(minilm_env: MiniLmCache) -> None:
    long_text = " ".join(["word"] * 300)
    data = run_inprocess("embed", MINILM, long_text, CAT, "--json").json["data"]
    assert (data["truncated"], data["max_tokens"]) == (1, 256)
    human = run_inprocess("embed", MINILM, long_text)
    assert human.code == 0
    assert human.stderr == "Note: 1 text was longer than 256 tokens and cut to that length\n"


def test_a_chat_model_is_refused_as_incompatible(demo_cache: DemoCache) -> None:
    error = _error(run_inprocess("embed", str(demo_cache.paths[CHAT]), "hello", "--json"))
    assert error["type"] == "model_incompatible"
    assert error["message"].endswith(
        "is a chat model, not an embedding model; run generates text with it")


def test_run_still_refuses_the_embedding_model(minilm_env: MiniLmCache) -> None:
    result = run_inprocess("run", MINILM, "hello", "--json")
    assert result.json["error"]["type"] == "model_incompatible"
    assert "embedding model" in result.json["error"]["message"]


def test_a_bin_only_encoder_is_refused_with_the_reason(tmp_path: Path) -> None:
    folder = tmp_path / "bin-only"
    folder.mkdir()
    files = bert_embedding_files()
    files["pytorch_model.bin"] = files.pop("model.safetensors")
    del files["README.md"]
    for name, content in files.items():
        (folder / name).write_bytes(content)
    error = _error(run_inprocess("embed", str(folder), "hello", "--json"))
    assert error["type"] == "model_incompatible"
    assert error["reason"] == "Embedding weights are PyTorch .bin only; mlxk2 embeds from " \
                              "safetensors"


@pytest.mark.parametrize("args, message", [
    ((), "No texts to embed: give TEXT arguments, --file F, or - for stdin"),
    (("hi", "--dimensions", "385"), "--dimensions must be between 1 and 384, the model's size"),
    (("hi", "--batch", "0"), "--batch must be at least 1"),
    (("hi", "--format", "jsonl"), "--json and --format jsonl are two output formats; pick one"),
    (("",), "Text 1 is empty"),
])
def test_bad_options_are_validation_errors(minilm_env: MiniLmCache, args: tuple[str, ...],
                                           message: str) -> None:
    error = _error(run_inprocess("embed", MINILM, *args, "--json"))
    assert (error["type"], error["message"]) == ("ValidationError", message)


def test_missing_files_and_models_are_clear_envelopes(minilm_env: MiniLmCache,
                                                      tmp_path: Path) -> None:
    error = _error(run_inprocess("embed", MINILM, "--file", str(tmp_path / "nope"), "--json"))
    assert error["type"] == "FilesystemError" and "No such file" in error["message"]
    assert _error(run_inprocess("embed", "nobody/nothing", "x", "--json"))["type"] == \
        "model_not_found"


EMBED_THEN_STATUS = """
import json, sys
from mlxk2.cli import main
code = main(["embed", sys.argv[1], "A cat sits on the mat", "--json"])
from mlxk2.engine.blas import blas_status
status = blas_status()
print(json.dumps({"code": code, "status": status.to_dict() if status else None}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the OpenBLAS binding is Linux-only")
def test_embed_command_binds_openblas_before_mlx_like_run(minilm_cache: MiniLmCache) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLXK2_BLAS"}
    env.update(HF_HOME=str(minilm_cache.hf_home), HF_HUB_CACHE=str(minilm_cache.root),
               PYTHONPATH=str(REPO_ROOT / "src"))
    proc = subprocess.run([sys.executable, "-c", EMBED_THEN_STATUS, MINILM], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert report["status"]["backend"] == "openblas" and report["status"]["verified"], report
