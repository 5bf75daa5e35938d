"""Integrity: every damaged model gets its first problem as the reason; odd entries never raise."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from mlxk2.cache.integrity import check_integrity, workspace_report
from mlxk2.ops.list import list_models
from tests.fixtures.cache import BuiltCache
from tests.fixtures.cache_cases import CASES, IS_ROOT
from tests.fixtures.cache_content import (
    gguf_files,
    lfs_pointer,
    mlx_chat_files,
    pytorch_files,
    sharded_files,
    vision_files,
)
from tests.fixtures.cache_damage import build_special_file, build_unreadable_config

# Cases whose damage is in the snapshot's files (the others break the cache structure).
SNAPSHOT_CASES = [k for k, c in CASES.items() if not c.repo_id.startswith("odd/")]


def _workspace(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


@pytest.mark.parametrize("key", SNAPSHOT_CASES)
def test_each_cached_case_gets_its_integrity_verdict(model_cache: BuiltCache, key: str) -> None:
    case = CASES[key]

    reason = check_integrity(model_cache.paths[key])

    if case.expected_health == "healthy":
        assert reason is None
    else:
        assert reason is not None and case.expected_reason in reason


@pytest.mark.parametrize("key", SNAPSHOT_CASES)
def test_workspace_report_agrees_with_the_first_problem(model_cache: BuiltCache, key: str) -> None:
    path = model_cache.paths[key]

    report = workspace_report(path)

    assert report["healthy"] is (check_integrity(path) is None)
    assert (report["anomalies"] or [None])[0] == check_integrity(path)


def test_list_gives_every_case_its_verdict_and_skips_non_models(model_cache: BuiltCache) -> None:
    models = {m.name: m for m in list_models(root=model_cache.root)}

    assert set(models) == {c.repo_id for c in CASES.values()}
    wrong = {
        key: (m.health, m.runtime_compatible, m.reason)
        for key, case in CASES.items()
        if not case.matches((m := models[case.repo_id]).health, m.runtime_compatible, m.reason)
    }
    assert wrong == {}


def test_a_special_file_is_unreadable_and_never_blocks(hf_cache: Path) -> None:
    snapshot = build_special_file(hf_cache, "broken/fifo")

    assert check_integrity(snapshot) == "Unreadable files: stream.json"


def test_a_config_without_read_permission_is_named() -> None:
    """Checked as an unprivileged user: root would read a mode-000 file anyway."""
    shared = Path(tempfile.mkdtemp())
    try:
        shared.chmod(0o755)
        snapshot = build_unreadable_config(shared, "broken/unreadable")
        assert _integrity_as_nobody(snapshot) == "config.json is not readable (Permission denied)"
    finally:
        shutil.rmtree(shared)


def _integrity_as_nobody(snapshot: Path) -> str | None:
    if not IS_ROOT:
        return check_integrity(snapshot)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to 'nobody', report, and leave without pytest's teardown
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, json.dumps(check_integrity(snapshot)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        result = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(result)


def test_a_file_instead_of_a_folder_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "model"
    path.write_text("{}")

    assert check_integrity(path) == "Model folder is not a directory"
    assert check_integrity(tmp_path / "absent") == "Model folder is not a directory"


def test_a_folder_named_config_json_is_not_a_config(tmp_path: Path) -> None:
    files = mlx_chat_files()
    del files["config.json"]
    ws = _workspace(tmp_path / "ws", files)
    (ws / "config.json").mkdir()

    assert check_integrity(ws) == "config.json is not a file"


def test_workspace_folders_are_checked_like_snapshots(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", mlx_chat_files())
    assert check_integrity(ws) is None

    (ws / "model.safetensors").write_bytes(lfs_pointer())
    assert check_integrity(ws) == "LFS pointers instead of files: model.safetensors"


def test_hidden_folders_and_directory_links_are_not_walked(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", mlx_chat_files())
    _workspace(ws / ".git", {"HEAD": lfs_pointer()})
    (ws / "sub").mkdir()
    (ws / "sub" / "up").symlink_to("..")

    assert check_integrity(ws) is None


def test_problems_are_reported_in_check_order(tmp_path: Path) -> None:
    files = mlx_chat_files()
    del files["config.json"]
    files["tokenizer.json"] = lfs_pointer()
    ws = _workspace(tmp_path / "ws", files)

    report = workspace_report(ws)

    assert report["anomalies"] == [
        "LFS pointers instead of files: tokenizer.json",
        "config.json missing",
    ]
    assert check_integrity(ws) == report["anomalies"][0]


def test_gguf_needs_no_config(tmp_path: Path) -> None:
    assert check_integrity(_workspace(tmp_path / "ws", gguf_files())) is None


@pytest.mark.parametrize("tokenizer", ["tokenizer.model", "vocab.json", "cl100k.tiktoken"])
def test_any_tokenizer_file_satisfies_tokenizer_config(tmp_path: Path, tokenizer: str) -> None:
    files = mlx_chat_files()
    del files["tokenizer.json"]
    files[tokenizer] = b"tokenizer data"

    assert check_integrity(_workspace(tmp_path / "ws", files)) is None


def test_processor_config_counts_as_a_preprocessor(tmp_path: Path) -> None:
    files = vision_files(preprocessor=False)
    files["processor_config.json"] = b'{"processor_class": "X"}'

    assert check_integrity(_workspace(tmp_path / "ws", files)) is None


def test_an_unparseable_index_is_named(tmp_path: Path) -> None:
    files = sharded_files()
    files["model.safetensors.index.json"] = b'{"weight_map": ["not", "a", "map"]}'

    reason = check_integrity(_workspace(tmp_path / "ws", files))

    assert reason == "model.safetensors.index.json is not a valid index"


def test_sharded_pytorch_weights_need_their_index(tmp_path: Path) -> None:
    files = pytorch_files()
    del files["pytorch_model.bin"]
    files["pytorch_model-00001-of-00002.bin"] = b"PK" + bytes(64)
    files["pytorch_model-00002-of-00002.bin"] = b"PK" + bytes(65)

    reason = check_integrity(_workspace(tmp_path / "ws", files))

    assert reason == "Sharded weights without index: pytorch_model.bin.index.json missing"


def test_a_truncated_shard_is_found_even_with_a_complete_index(tmp_path: Path) -> None:
    files = sharded_files()
    files["model-00001-of-00002.safetensors"] = files["model-00001-of-00002.safetensors"][:-1]

    reason = check_integrity(_workspace(tmp_path / "ws", files))

    assert reason is not None
    assert reason.startswith("Truncated or malformed safetensors: model-00001-of-00002")


def test_workspace_report_of_a_healthy_sharded_model(tmp_path: Path) -> None:
    files = sharded_files()
    ws = _workspace(tmp_path / "ws", files)

    report = workspace_report(ws)

    assert report == {
        "files_count": len(files),
        "total_bytes": sum(len(v) for v in files.values()),
        "config": {"exists": True, "valid_json": True, "path": str(ws / "config.json")},
        "weights": {
            "count": 2,
            "formats": ["safetensors"],
            "index": {"has_index": True, "missing": []},
            "pattern_complete": True,
        },
        "anomalies": [],
        "healthy": True,
    }


def test_workspace_report_of_a_broken_model_lists_every_problem(tmp_path: Path) -> None:
    files = sharded_files()
    del files["model-00002-of-00002.safetensors"]
    files["config.json"] = b"{broken"
    ws = _workspace(tmp_path / "ws", files)

    report = workspace_report(ws)

    assert report["healthy"] is False
    assert report["config"] == {
        "exists": True,
        "valid_json": False,
        "path": str(ws / "config.json"),
    }
    assert report["weights"]["index"] == {
        "has_index": True,
        "missing": ["model-00002-of-00002.safetensors"],
    }
    assert report["weights"]["pattern_complete"] is False
    assert report["anomalies"] == [
        "config.json is not valid JSON",
        "Missing shards listed in model.safetensors.index.json: model-00002-of-00002.safetensors",
    ]


def test_workspace_report_without_config_or_weights(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", {"README.md": b"# notes\n"})

    report = workspace_report(ws)

    assert report["config"] == {"exists": False, "valid_json": False, "path": None}
    assert report["weights"]["count"] == 0 and report["weights"]["formats"] == []
    assert report["anomalies"] == ["config.json missing", "No weight files found"]


def test_integrity_never_opens_tensor_data(tmp_path: Path) -> None:
    """A sparse 4 GiB shard is checked from its header alone."""
    files = mlx_chat_files()
    ws = _workspace(tmp_path / "ws", files)
    big = safetensors_header_only(4 << 30)
    with open(ws / "model.safetensors", "wb") as fh:
        fh.write(big)
        fh.truncate(len(big) + (4 << 30))

    assert check_integrity(ws) is None
    assert os.stat(ws / "model.safetensors").st_blocks * 512 < 1 << 20


def safetensors_header_only(nbytes: int) -> bytes:
    import json
    import struct

    header = json.dumps(
        {"big": {"dtype": "U8", "shape": [nbytes], "data_offsets": [0, nbytes]}}
    ).encode()
    return struct.pack("<Q", len(header)) + header


def test_a_shard_family_with_a_gap_is_incomplete_even_when_the_index_agrees(
    tmp_path: Path,
) -> None:
    files = sharded_files(shards=3)
    del files["model-00002-of-00003.safetensors"]
    files["model.safetensors.index.json"] = (
        b'{"weight_map": {"a": "model-00001-of-00003.safetensors"}}'
    )

    reason = check_integrity(_workspace(tmp_path / "ws", files))

    assert reason == "Incomplete shard set: model-00002-of-00003.safetensors missing"


def test_unfinished_files_in_the_folder_make_it_unhealthy(tmp_path: Path) -> None:
    files = mlx_chat_files()
    files["convert.incomplete"] = b""

    reason = check_integrity(_workspace(tmp_path / "ws", files))

    assert reason == "Unfinished files: convert.incomplete"


def _big_tokenizer(first_key: str = "version", model: object = None) -> bytes:
    """A tokenizer.json past the parse-whole limit, laid out as the tokenizers library writes it."""
    vocab = {f"tok{i}": i for i in range(40_000)}
    doc = {first_key: "1.0", "added_tokens": [{"id": i, "content": f"<x{i}>"} for i in range(50)],
           "model": model if model is not None else {"type": "BPE", "vocab": vocab, "merges": []}}
    return json.dumps(doc, indent=2).encode()


@pytest.mark.parametrize(("content", "reason"), [
    (b'{"a": 1}', 'tokenizer.json is not a tokenizer (no "model" with a type or vocab)'),
    (b'{"model": "BPE"}', 'tokenizer.json is not a tokenizer'),
    (b'{"a": ', "tokenizer.json is not valid JSON (Expecting value at line 1 column 7)"),
    (b"\xff\xfe garbage", "tokenizer.json is not UTF-8 text"),
    (_big_tokenizer(first_key="a"), "tokenizer.json is not a tokenizer"),
    (_big_tokenizer(model={"kind": "BPE", "entries": list(range(60_000))}),
     "tokenizer.json is not a tokenizer"),
    (_big_tokenizer()[:-200], "tokenizer.json is truncated"),
    (b"\x00" * 300_000, "tokenizer.json is not valid JSON"),
])
def test_a_tokenizer_json_that_is_no_tokenizer_is_unhealthy(tmp_path: Path, content: bytes,
                                                            reason: str) -> None:
    files = mlx_chat_files()
    files["tokenizer.json"] = content
    assert (check_integrity(_workspace(tmp_path / "ws", files)) or "").startswith(reason)


def test_a_large_real_shaped_tokenizer_json_is_healthy(tmp_path: Path) -> None:
    files = mlx_chat_files()
    files["tokenizer.json"] = _big_tokenizer()
    assert len(files["tokenizer.json"]) > 256 * 1024
    assert check_integrity(_workspace(tmp_path / "ws", files)) is None
