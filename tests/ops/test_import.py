"""``import``: sources (file, cache, Ollama), the JSON envelope, and refusals that write nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mlxk2.cache.layout import store_snapshot
from mlxk2.commands import import_ as import_command
from mlxk2.errors import (
    ModelIncompatibleError,
    ModelNotFoundError,
    ModelUnhealthyError,
    ValidationError,
)
from mlxk2.ops import import_ as import_op
from mlxk2.ops.import_ import import_gguf, plan_import, run_import
from tests.fixtures.cli import run_inprocess
from tests.fixtures.gguf import write_tiny_gguf
from tests.fixtures.schema import assert_valid_envelope


def nothing_written(parent: Path, name: str) -> bool:
    """No target and no staging folder left beside it."""
    return not (parent / name).exists() and not list(parent.glob(f".{name}.*"))


def ollama_store(models: Path, gguf: Path, name: str = "tiny", tag: str = "latest") -> None:
    """Ollama's layout: a manifest naming the GGUF blob by its sha256."""
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    (models / "blobs").mkdir(parents=True, exist_ok=True)
    (models / "blobs" / f"sha256-{digest}").write_bytes(gguf.read_bytes())
    manifest = models / "manifests" / "registry.ollama.ai" / "library" / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({
        "schemaVersion": 2,
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
             "size": gguf.stat().st_size},
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:00"},
        ],
    }))


def test_cli_import_writes_a_workspace_that_run_answers_from(hf_home, tmp_path):
    source = write_tiny_gguf(tmp_path / "tiny.gguf")
    done = run_inprocess("import", str(source.path), str(tmp_path / "ws"), "--json")
    assert done.code == 0, done.stderr
    assert_valid_envelope(done.json)
    data = done.json["data"]
    assert (data["architecture"], data["lossless"], data["health"]) == ("llama", True, "healthy")
    assert data["tensor_types"] == {"F16": 16, "F32": 5}

    ran = run_inprocess("run", str(tmp_path / "ws"), "Hi", "--max-tokens", "3", "--json")
    assert ran.code == 0, ran.stderr
    assert ran.json["data"]["usage"]["completion_tokens"] > 0
    assert not (hf_home / "hub").exists() or not any((hf_home / "hub").iterdir())


def test_human_output_names_the_types_and_how_to_run(hf_home, tmp_path):
    source = write_tiny_gguf(tmp_path / "tiny.gguf", weight_type="Q4_K")
    done = run_inprocess("import", str(source.path), str(tmp_path / "ws"))
    assert done.code == 0, done.stderr
    assert "16 Q4_K" in done.stdout
    assert "not lossless" in done.stdout
    assert f'mlxk2 run {tmp_path / "ws"} "Hello"' in done.stdout


def test_default_target_is_named_after_the_file(hf_home, tmp_path, monkeypatch):
    source = write_tiny_gguf(tmp_path / "tiny.gguf")
    monkeypatch.chdir(tmp_path)
    result = import_gguf(str(source.path))
    assert result.target == "./tiny-mlx"
    assert (tmp_path / "tiny-mlx" / "config.json").is_file()


def test_an_ollama_model_imports_by_name_and_tag(tmp_path, monkeypatch, hf_home):
    source = write_tiny_gguf(tmp_path / "tiny.gguf", arch="qwen2")
    models = tmp_path / "ollama"
    ollama_store(models, source.path, tag="0.5b")
    monkeypatch.setenv("OLLAMA_MODELS", str(models))

    done = run_inprocess("import", "ollama:tiny:0.5b", str(tmp_path / "ws"), "--json")
    assert done.code == 0, done.stderr
    assert done.json["data"]["architecture"] == "qwen2"
    assert done.json["data"]["gguf_file"].startswith(str(models / "blobs"))


def test_a_missing_ollama_tag_is_not_found_and_lists_the_tags(tmp_path):
    source = write_tiny_gguf(tmp_path / "tiny.gguf")
    models = tmp_path / "ollama"
    ollama_store(models, source.path, tag="latest")
    with pytest.raises(ModelNotFoundError, match="tags present: latest"):
        import_gguf("ollama:tiny:7b", str(tmp_path / "ws"), root=tmp_path / "hub",
                    ollama_dir=models)
    assert nothing_written(tmp_path, "ws")


def test_a_gguf_repo_in_the_cache_imports_by_name_and_list_points_to_import(hf_home, tmp_path):
    source = write_tiny_gguf(tmp_path / "src" / "tiny.Q8_0.gguf", weight_type="Q8_0")
    store_snapshot(hf_home / "hub", "someone/tiny-GGUF", tmp_path / "src")

    listed = run_inprocess("list", "--all", "--json")
    reason = listed.json["data"]["models"][0]["reason"]
    assert "mlxk2 import" in reason

    done = run_inprocess("import", "tiny-GGUF", str(tmp_path / "ws"), "--json")
    assert done.code == 0, done.stderr
    assert done.json["data"]["quantization"] == {"bits": 8, "group_size": 32}
    assert done.json["data"]["lossless"] is True
    assert source.path.is_file()


def test_a_folder_with_several_gguf_files_asks_for_one(tmp_path):
    write_tiny_gguf(tmp_path / "models" / "a.gguf")
    write_tiny_gguf(tmp_path / "models" / "b.gguf", seed=1)
    with pytest.raises(ValidationError, match="2 GGUF files"):
        plan_import(f"{tmp_path / 'models'}/", str(tmp_path / "ws"), root=tmp_path / "hub")


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"arch": "falcon"}, ModelIncompatibleError, "architecture 'falcon'"),
        ({"extra_tensor": ("blk.0.mystery.weight", "F16")}, ModelIncompatibleError,
         "blk.0.mystery.weight"),
        ({"tied": True, "extra_tensor": ("output.weight", "Q8_K")}, ModelIncompatibleError,
         "Q8_K"),
        ({"pre_tokenizer": "mystery"}, ModelIncompatibleError, "pre-tokenizer 'mystery'"),
        ({"split_count": 3}, ModelIncompatibleError, "split into 3 files"),
    ],
    ids=["unknown-architecture", "unknown-tensor", "unreadable-type", "unknown-pre-tokenizer",
         "split-file"],
)
def test_refusals_name_the_problem_and_write_nothing(tmp_path, options, error, message):
    source = write_tiny_gguf(tmp_path / "bad.gguf", **options)
    with pytest.raises(error, match=message):
        import_gguf(str(source.path), str(tmp_path / "ws"), root=tmp_path / "hub")
    assert nothing_written(tmp_path, "ws")


def test_an_unreadable_type_names_type_and_tensor(tmp_path):
    source = write_tiny_gguf(tmp_path / "bad.gguf", tied=True,
                             extra_tensor=("output.weight", "Q8_K"))
    with pytest.raises(ModelIncompatibleError) as caught:
        plan_import(str(source.path), str(tmp_path / "ws"), root=tmp_path / "hub")
    assert "Q8_K" in str(caught.value) and "'output.weight'" in str(caught.value)


def test_a_truncated_file_is_unhealthy_and_writes_nothing(tmp_path):
    source = write_tiny_gguf(tmp_path / "cut.gguf")
    data = source.path.read_bytes()
    source.path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelUnhealthyError, match="Truncated"):
        import_gguf(str(source.path), str(tmp_path / "ws"), root=tmp_path / "hub")
    assert nothing_written(tmp_path, "ws")


def test_a_file_cut_inside_its_header_is_unhealthy(tmp_path):
    source = write_tiny_gguf(tmp_path / "cut.gguf")
    source.path.write_bytes(source.path.read_bytes()[:5000])
    with pytest.raises(ModelUnhealthyError):
        plan_import(str(source.path), str(tmp_path / "ws"), root=tmp_path / "hub")


def test_a_file_truncated_after_planning_leaves_nothing_behind(tmp_path):
    source = write_tiny_gguf(tmp_path / "m.gguf")
    plan = plan_import(str(source.path), str(tmp_path / "ws"), root=tmp_path / "hub")
    data = source.path.read_bytes()
    source.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelUnhealthyError):
        run_import(plan)
    assert nothing_written(tmp_path, "ws")


def test_a_non_empty_target_is_refused_and_kept(tmp_path):
    source = write_tiny_gguf(tmp_path / "m.gguf")
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "notes.txt").write_text("mine")
    with pytest.raises(ValidationError, match="not empty"):
        import_gguf(str(source.path), str(tmp_path / "ws"), root=tmp_path / "hub")
    assert [p.name for p in (tmp_path / "ws").iterdir()] == ["notes.txt"]
    assert not list(tmp_path.glob(".ws.*"))


def test_a_target_inside_the_cache_is_refused(tmp_path):
    source = write_tiny_gguf(tmp_path / "m.gguf")
    (tmp_path / "hub").mkdir()
    with pytest.raises(ValidationError, match="inside the Hugging Face cache"):
        plan_import(str(source.path), str(tmp_path / "hub" / "x"), root=tmp_path / "hub")


def test_bits_on_a_file_mlx_loads_exactly_is_refused(tmp_path):
    source = write_tiny_gguf(tmp_path / "m.gguf", weight_type="Q4_0")
    with pytest.raises(ValidationError, match="--bits"):
        plan_import(str(source.path), str(tmp_path / "ws"), bits=8, root=tmp_path / "hub")


def test_bits_choose_the_requantisation_of_a_k_quant(tmp_path):
    source = write_tiny_gguf(tmp_path / "m.gguf", weight_type="Q4_K")
    result = import_gguf(str(source.path), str(tmp_path / "ws"), bits=8, group_size=32,
                         root=tmp_path / "hub")
    assert result.quantization == {"bits": 8, "group_size": 32}
    assert result.lossless is False


def test_a_lossy_dtype_cast_is_reported(tmp_path):
    source = write_tiny_gguf(tmp_path / "m.gguf", weight_type="F32")
    exact = import_gguf(str(source.path), str(tmp_path / "a"), dtype="float32",
                        root=tmp_path / "hub")
    rounded = import_gguf(str(source.path), str(tmp_path / "b"), dtype="bfloat16",
                          root=tmp_path / "hub")
    assert (exact.lossless, rounded.lossless) == (True, False)


def test_cli_choices_equal_the_operation_s():
    assert import_command.BITS == import_op.BITS
    assert import_command.GROUP_SIZES == import_op.GROUP_SIZES
    assert import_command.DTYPES == import_op.DTYPES


def test_an_error_envelope_has_command_import(hf_home, tmp_path):
    done = run_inprocess("import", str(tmp_path / "missing.gguf"), "--json")
    assert done.code == 1
    assert_valid_envelope(done.json)
    assert (done.json["command"], done.json["error"]["type"]) == ("import", "model_not_found")


def test_a_killed_import_leaves_nothing_healthy_and_the_next_one_cleans_up(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from mlxk2.cache.integrity import check_integrity
    from tests.fixtures.cli import cli_env
    from tests.fixtures.realmodel import smollm2_gguf

    gguf = smollm2_gguf()
    proc = subprocess.Popen([sys.executable, "-m", "mlxk2", "import", str(gguf),
                             str(tmp_path / "ws")], env=cli_env(tmp_path / "home"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".ws.*.tmp/tokenizer.json")):
        assert proc.poll() is None, "the import ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)

    assert not (tmp_path / "ws").exists()
    (staging,) = tmp_path.glob(".ws.*.tmp")
    assert check_integrity(staging) is not None  # the marker makes it unhealthy

    source = write_tiny_gguf(tmp_path / "tiny.gguf")
    import_gguf(str(source.path), str(tmp_path / "ws"), root=tmp_path / "hub")
    assert not staging.exists()
    assert check_integrity(tmp_path / "ws") is None


def test_cheap_commands_on_a_gguf_model_never_import_the_gguf_reader(tmp_path):
    import subprocess
    import sys

    from tests.fixtures.cli import cli_env

    write_tiny_gguf(tmp_path / "src" / "tiny.gguf")
    store_snapshot(tmp_path / "home" / "hub", "someone/tiny-GGUF", tmp_path / "src")
    probe = (
        "import sys\nfrom mlxk2.cli import main\n"
        "main(sys.argv[1:])\n"
        "loaded = [m for m in ('gguf', 'numpy', 'tokenizers', 'mlx') if m in sys.modules]\n"
        "sys.stderr.write('LOADED=' + ','.join(loaded))\n"
    )
    for argv in (["list", "--all"], ["show", "tiny-GGUF"], ["health"]):
        proc = subprocess.run([sys.executable, "-c", probe, *argv], env=cli_env(tmp_path / "home"),
                              capture_output=True, text=True, timeout=60)
        assert "LOADED=" in proc.stderr, proc.stderr
        assert proc.stderr.rsplit("LOADED=", 1)[1].strip() == "", argv
