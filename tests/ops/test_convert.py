"""convert (alpha): repaired indexes, mlx-lm quantisation and casts, and every refusal.

Quantise and dtype tests use the session's real demo models and generate text
with the results; refusals check that nothing at all was written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlxk2.cache.integrity import check_integrity
from mlxk2.cache.safetensors import read_header
from mlxk2.commands import convert as convert_command
from mlxk2.ops import convert as convert_ops
from mlxk2.output.convert import progress_bar
from mlxk2.output.sink import Output
from tests.fixtures.cache_cases import CASES
from tests.fixtures.cache_content import mlx_chat_files, sharded_files
from tests.fixtures.cli import REPO_ROOT, CliResult, cli_env, run_inprocess
from tests.fixtures.models import CHAT, CHAT_4BIT, DemoCache

ALPHA = "MLXK2_ENABLE_ALPHA_FEATURES"


@pytest.fixture
def alpha(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALPHA, "1")


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def _tree(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with a digest of its content (links followed)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[rel] = "link" if path.is_symlink() else "dir"
    return found


def _convert(*args: str) -> CliResult:
    return run_inprocess("convert", *args, "--json")


def _stale_index_model(folder: Path) -> Path:
    """Two healthy shards whose index still names the shard of an older upload."""
    files = sharded_files()
    index = json.loads(files["model.safetensors.index.json"])
    index["weight_map"] = dict.fromkeys(index["weight_map"], "model-00001-of-00001.safetensors")
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    return _write(folder, files)


def _error(result: CliResult, error_type: str, code: int = 1) -> str:
    doc = result.json
    assert (result.code, doc["status"], doc["error"]["type"]) == (code, "error", error_type)
    return doc["error"]["message"]


# --- gating and the command line ---------------------------------------------------


def test_convert_is_hidden_from_main_help_but_has_its_own() -> None:
    main_help = run_inprocess("--help")
    own_help = run_inprocess("convert", "--help")

    assert main_help.code == 0 and "convert" not in main_help.stdout
    assert own_help.code == 0
    assert ALPHA in own_help.stdout
    assert "--repair-index" in own_help.stdout and "float32" in own_help.stdout


def test_without_the_alpha_flag_convert_refuses_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ALPHA, raising=False)
    src = _stale_index_model(tmp_path / "src")
    before = _tree(tmp_path)

    message = _error(_convert(str(src), str(tmp_path / "dst"), "--repair-index"), "ValidationError")

    assert ALPHA in message
    assert _tree(tmp_path) == before


def test_cli_choices_match_the_operation_limits() -> None:
    assert convert_command.QUANT_BITS == convert_ops.QUANT_BITS
    assert convert_command.GROUP_SIZES == convert_ops.GROUP_SIZES
    assert convert_command.DTYPES == convert_ops.DTYPES


def test_exactly_one_operation_is_required(alpha: None, tmp_path: Path) -> None:
    src = _stale_index_model(tmp_path / "src")

    neither = _convert(str(src), str(tmp_path / "a"))
    both = _convert(str(src), str(tmp_path / "b"), "--repair-index", "--dtype", "float32")

    _error(neither, "ValidationError")
    _error(both, "ValidationError")


# --- repair-index -------------------------------------------------------------------


def test_repair_index_heals_a_stale_index_from_the_shard_headers(
    alpha: None, tmp_path: Path
) -> None:
    src = _stale_index_model(tmp_path / "src")
    assert "Missing shards" in (check_integrity(src) or "")
    before = _tree(src)

    result = _convert(str(src), str(tmp_path / "dst"), "--repair-index")

    dst = tmp_path / "dst"
    data = result.json["data"]
    assert result.code == 0
    assert data["operation"] == "repair-index" and data["health"] == "healthy"
    assert data["source"] == str(src) and data["target"] == str(dst)
    assert data["files_written"] == len(list(src.iterdir()))
    assert check_integrity(dst) is None
    assert _tree(src) == before
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    headers = {p.name: read_header(p) for p in sorted(dst.glob("*.safetensors"))}
    tensors = [(t.name, shard) for shard, h in headers.items() for t in h.tensors]
    assert sorted(index["weight_map"].items()) == sorted(tensors)
    assert len(index["weight_map"]) == len(tensors)
    assert index["metadata"]["total_size"] == sum(h.data_bytes for h in headers.values())
    for name in src.iterdir():
        if name.name != "model.safetensors.index.json":
            assert (dst / name.name).read_bytes() == name.read_bytes()


def test_repair_index_adds_the_missing_index_of_a_cached_model(
    alpha: None, hf_cache: Path, tmp_path: Path
) -> None:
    case = CASES["no_index"]
    case.build(hf_cache, case.repo_id)
    cache_before = _tree(hf_cache)

    result = _convert(case.repo_id, str(tmp_path / "fixed"), "--repair-index")

    assert result.code == 0 and result.json["data"]["source"] == case.repo_id
    assert check_integrity(tmp_path / "fixed") is None
    assert _tree(hf_cache) == cache_before


def test_a_cached_source_can_be_named_by_hash(alpha: None, hf_cache: Path, tmp_path: Path) -> None:
    case = CASES["no_index"]
    snapshot = case.build(hf_cache, case.repo_id)

    result = _convert(f"no-index@{snapshot.name[:7]}", str(tmp_path / "fixed"), "--repair-index")

    assert result.code == 0 and result.json["data"]["source"] == case.repo_id
    assert check_integrity(tmp_path / "fixed") is None


def test_repair_index_refuses_a_truncated_shard(alpha: None, tmp_path: Path) -> None:
    files = sharded_files()
    shard = "model-00002-of-00002.safetensors"
    files[shard] = files[shard][:-7]
    src = _write(tmp_path / "src", files)
    before = _tree(tmp_path)

    message = _error(_convert(str(src), str(tmp_path / "dst"), "--repair-index"), "model_unhealthy")

    assert message.startswith(f"Truncated or malformed safetensors: {shard} (truncated")
    assert _tree(tmp_path) == before


def test_repair_index_refuses_when_the_result_would_stay_unhealthy(
    alpha: None, tmp_path: Path
) -> None:
    files = sharded_files()
    del files["tokenizer.json"]
    src = _write(tmp_path / "src", files)
    before = _tree(tmp_path)

    message = _error(_convert(str(src), str(tmp_path / "dst"), "--repair-index"), "model_unhealthy")

    assert "tokenizer_config.json present but no tokenizer" in message
    assert _tree(tmp_path) == before


# --- destinations -------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    ["cache", "cache-root", "non-empty", "non-empty-via-dotdot", "file", "same-as-source",
     "inside-source"],
)
def test_bad_destinations_are_refused_and_nothing_is_written(
    alpha: None, hf_cache: Path, tmp_path: Path, where: str
) -> None:
    src = _stale_index_model(tmp_path / "src")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    (tmp_path / "a-file").write_text("x")
    target = {
        "cache": hf_cache / "models--me--converted",
        "cache-root": hf_cache,
        "non-empty": tmp_path / "full",
        "non-empty-via-dotdot": f"{tmp_path / 'full'}/new/..",
        "file": tmp_path / "a-file",
        "same-as-source": src,
        "inside-source": src / "out",
    }[where]
    before = (_tree(tmp_path), _tree(hf_cache))

    _error(_convert(str(src), str(target), "--repair-index"), "ValidationError")

    assert (_tree(tmp_path), _tree(hf_cache)) == before


def test_an_existing_empty_destination_is_used(alpha: None, tmp_path: Path) -> None:
    src = _stale_index_model(tmp_path / "src")
    (tmp_path / "dst").mkdir()

    result = _convert(str(src), str(tmp_path / "dst"), "--repair-index")

    assert result.code == 0
    assert check_integrity(tmp_path / "dst") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]


def test_an_unknown_source_is_not_found(alpha: None, hf_cache: Path, tmp_path: Path) -> None:
    _error(_convert("nobody/nothing", str(tmp_path / "dst"), "--repair-index"), "model_not_found")
    assert not (tmp_path / "dst").exists()


# --- quantize and dtype with mlx-lm -------------------------------------------------


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _generates(model: Path) -> None:
    result = run_inprocess("run", str(model), "Hello", "--max-tokens", "4", "--json")
    data = result.json["data"]
    assert result.code == 0 and data["tokens_generated"] > 0 and data["response"]


def test_quantize_4_gives_a_quarter_size_healthy_runnable_model(
    alpha: None, demo_env: DemoCache, tmp_path: Path
) -> None:
    src = demo_env.paths[CHAT]
    before = _tree(demo_env.root)
    dst = tmp_path / "q4"

    result = _convert(CHAT, str(dst), "--quantize", "4")

    data = result.json["data"]
    assert result.code == 0 and data["health"] == "healthy" and data["operation"] == "quantize"
    assert data["size_bytes_after"] < data["size_bytes_before"]
    assert 0.2 < _weights_bytes(dst) / _weights_bytes(src) < 0.35
    config = json.loads((dst / "config.json").read_text())
    assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 64
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (dst / name).read_bytes() == (src / name).read_bytes()
    shown = run_inprocess("show", str(dst), "--json").json["data"]
    assert shown["metadata"]["quantization"] == "4bit"
    assert shown["model"]["health"] == "healthy" and shown["model"]["runtime_compatible"]
    _generates(dst)
    assert _tree(demo_env.root) == before


def test_quantize_honours_the_group_size(alpha: None, demo_env: DemoCache, tmp_path: Path) -> None:
    result = _convert(CHAT, str(tmp_path / "q8"), "--quantize", "8", "--q-group-size", "32")

    assert result.code == 0
    config = json.loads((tmp_path / "q8" / "config.json").read_text())
    assert config["quantization"] == {"group_size": 32, "bits": 8, "mode": "affine"}


def test_an_already_quantised_source_is_refused(
    alpha: None, demo_env: DemoCache, tmp_path: Path
) -> None:
    message = _error(_convert(CHAT_4BIT, str(tmp_path / "q"), "--quantize", "4"), "ValidationError")

    assert "already quantised" in message
    assert list(tmp_path.iterdir()) == []


def test_dtype_float32_round_trips_and_runs(
    alpha: None, demo_env: DemoCache, tmp_path: Path
) -> None:
    import mlx.core as mx

    src = demo_env.paths[CHAT]

    to_f32 = _convert(CHAT, str(tmp_path / "f32"), "--dtype", "float32")
    back = _convert(str(tmp_path / "f32"), str(tmp_path / "bf16"), "--dtype", "bfloat16")

    assert to_f32.code == 0 and back.code == 0
    f32 = tmp_path / "f32"
    dtypes = {t.dtype for p in f32.glob("*.safetensors") for t in read_header(p).tensors}
    assert dtypes == {"F32"}
    assert json.loads((f32 / "config.json").read_text())["torch_dtype"] == "float32"
    original = mx.load(str(src / "model.safetensors"))
    restored = mx.load(str(tmp_path / "bf16" / "model.safetensors"))
    assert original.keys() == restored.keys()
    assert all(mx.array_equal(original[k], restored[k]).item() for k in original)
    _generates(f32)


def test_dtype_keeps_quantised_tensors_packed(
    alpha: None, demo_env: DemoCache, tmp_path: Path
) -> None:
    src = demo_env.paths[CHAT_4BIT]

    result = _convert(CHAT_4BIT, str(tmp_path / "f16"), "--dtype", "float16")

    assert result.code == 0
    packed = {t.name for t in read_header(src / "model.safetensors").tensors if t.dtype == "U32"}
    after = {t.name: t.dtype for t in read_header(tmp_path / "f16" / "model.safetensors").tensors}
    assert packed and all(after[name] == "U32" for name in packed)
    assert {d for n, d in after.items() if n not in packed} == {"F16"}
    config = json.loads((tmp_path / "f16" / "config.json").read_text())
    assert config["quantization"]["bits"] == 4


def test_an_unsupported_architecture_cannot_be_quantised(alpha: None, tmp_path: Path) -> None:
    src = _write(tmp_path / "src", mlx_chat_files(model_type="qwen9_future", quantized=False))

    message = _error(
        _convert(str(src), str(tmp_path / "dst"), "--quantize", "4"), "model_incompatible"
    )

    assert "qwen9_future" in message
    assert not (tmp_path / "dst").exists()


# --- output and progress ------------------------------------------------------------


def test_human_output_says_what_was_written(alpha: None, tmp_path: Path) -> None:
    src = _stale_index_model(tmp_path / "src")

    result = run_inprocess("convert", str(src), str(tmp_path / "dst"), "--repair-index")

    assert result.code == 0
    assert result.stdout.startswith(
        f"Converted {src} -> {tmp_path / 'dst'} (rebuilt the shard index)"
    )
    assert "healthy." in result.stdout


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_reported_and_drawn_only_on_a_terminal(tmp_path: Path) -> None:
    src = _stale_index_model(tmp_path / "src")
    plan = convert_ops.plan_convert(
        str(src), str(tmp_path / "dst"), "repair-index", root=tmp_path / "hub"
    )
    stderr = _Terminal()
    seen: list[tuple[str, int, int]] = []

    with progress_bar(Output(json_mode=False, stderr=stderr)) as draw:
        assert draw is not None

        def both(stage: str, done: int, total: int) -> None:
            seen.append((stage, done, total))
            draw(stage, done, total)

        convert_ops.run_convert(plan, both)
    with progress_bar(Output(json_mode=True, stderr=_Terminal())) as silent:
        assert silent is None

    assert seen[-1][1] == seen[-1][2] and seen[-1][0] == "Copying files"
    assert "Copying files" in stderr.getvalue()


# --- interruption -------------------------------------------------------------------


def _healthy_folders(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.is_dir() and check_integrity(p) is None]


def _convert_and_kill(source: Path, out: Path, env: dict[str, str]) -> int:
    """Start a quantise, SIGKILL it once its staging folder exists; return its exit code."""
    cmd = [sys.executable, "-m", "mlxk2", "convert", str(source), str(out / "q4")]
    proc = subprocess.Popen(
        [*cmd, "--quantize", "4", "--json"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            staged = [p for p in out.iterdir() if p.name.endswith(".tmp")]
            if staged:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)
    finally:
        code = proc.wait(timeout=60)
    return code


def test_a_convert_killed_through_the_cli_leaves_nothing_healthy(
    demo_cache: DemoCache, tmp_path: Path
) -> None:
    env = cli_env(demo_cache.hf_home, **{ALPHA: "1"})
    code = _convert_and_kill(demo_cache.paths[CHAT], tmp_path, env)

    assert code == -signal.SIGKILL
    assert _healthy_folders(tmp_path) == []


_KILL_AT_STAGE = """
import os, signal, sys
from mlxk2.ops.convert import plan_convert, run_convert

source, target, stage, step = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def kill_at(name, done, total):
    if (name, done) == (stage, step):
        os.kill(os.getpid(), signal.SIGKILL)

run_convert(plan_convert(source, target, "quantize", bits=4), progress=kill_at)
"""


@pytest.mark.parametrize(("stage", "step"), [("Quantising", 1), ("Saving", 3)])
def test_a_convert_killed_at_each_stage_leaves_nothing_healthy(
    demo_cache: DemoCache, tmp_path: Path, stage: str, step: int
) -> None:
    """The progress callback kills the process at an exact stage, weights written included."""
    env = cli_env(demo_cache.hf_home, **{ALPHA: "1"})
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_AT_STAGE, str(demo_cache.paths[CHAT]),
         str(tmp_path / "q4"), stage, str(step)],
        env=env, capture_output=True, text=True, timeout=120)

    assert proc.returncode == -signal.SIGKILL, proc.stderr
    staged = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(staged) == 1
    if stage == "Saving":
        assert list(staged[0].glob("*.safetensors")), "weights were written before the kill"
    assert _healthy_folders(tmp_path) == []


def test_the_next_convert_removes_what_a_killed_one_left_behind(
    alpha: None, demo_cache: DemoCache, tmp_path: Path
) -> None:
    env = cli_env(demo_cache.hf_home, **{ALPHA: "1"})
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_AT_STAGE, str(demo_cache.paths[CHAT]),
         str(tmp_path / "q4"), "Saving", "3"],
        env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # Not ours to remove: a live writer's folder, and one without the marker.
    live = _write(tmp_path / f".q4.{os.getpid()}.aaaa.tmp", {convert_ops.MARKER: b""})
    unmarked = _write(tmp_path / ".q4.999999999.bbbb.tmp", {"notes": b"x"})

    result = _convert(str(demo_cache.paths[CHAT]), str(tmp_path / "q4"), "--quantize", "4")

    assert result.code == 0, result.json
    assert check_integrity(tmp_path / "q4") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["q4", live.name, unmarked.name])
