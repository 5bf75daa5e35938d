"""The header-only safetensors reader: valid files parse, every kind of damage is named."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from mlxk2.cache.safetensors import MAX_HEADER_BYTES, SafetensorsError, check_file, read_header
from tests.fixtures.cache_content import safetensors_bytes


def _raw(header: object, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.fixture
def reference_file(tmp_path: Path) -> Path:
    """A file written by the safetensors library itself."""
    path = tmp_path / "ref.safetensors"
    tensors = {"a": np.zeros((3, 4), np.float32), "b": np.arange(5, dtype=np.int64)}
    save_file(tensors, str(path), metadata={"format": "mlx"})
    return path


def test_reads_a_file_written_by_the_safetensors_library(reference_file: Path) -> None:
    header = read_header(reference_file)

    by_name = {t.name: t for t in header.tensors}
    assert set(by_name) == {"a", "b"}
    assert by_name["a"].dtype == "F32" and by_name["a"].shape == (3, 4)
    assert by_name["a"].nbytes == 48 and by_name["b"].nbytes == 40
    assert header.data_bytes == 88
    assert header.metadata == {"format": "mlx"}
    assert header.file_size == reference_file.stat().st_size
    assert check_file(reference_file) is None


def test_reads_hand_written_bf16_tensors(tmp_path: Path) -> None:
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(safetensors_bytes({"w": ("BF16", (4, 8)), "n": ("F16", (8,))}))

    header = read_header(path)

    assert [(t.name, t.dtype, t.nbytes) for t in header.tensors] == [
        ("w", "BF16", 64),
        ("n", "F16", 16),
    ]


@pytest.mark.parametrize("keep", [0, 5, 8, 20, -1])
def test_any_cut_is_reported_as_truncated(reference_file: Path, tmp_path: Path, keep: int) -> None:
    full = reference_file.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(full[:keep])

    with pytest.raises(SafetensorsError) as info:
        read_header(path)

    assert info.value.reason.startswith("truncated")
    assert check_file(path) == info.value.reason


def test_absurd_header_length_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "absurd.safetensors"
    path.write_bytes(struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}")

    reason = check_file(path)

    assert reason is not None and "absurd header length" in reason


@pytest.mark.parametrize(
    "content",
    [
        struct.pack("<Q", 4) + b"\xff\xfe{}",
        struct.pack("<Q", 9) + b"not json!",
        _raw([1, 2, 3]),
        _raw({"t": "not an entry"}),
        _raw({"t": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8)),
        _raw({"t": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8)),
        _raw({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)),
        _raw({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, bytes(8)),
        _raw({"__metadata__": ["x"]}),
    ],
    ids=[
        "binary",
        "not-json",
        "not-object",
        "bad-entry",
        "reversed-offsets",
        "negative-dim",
        "size-mismatch",
        "one-offset",
        "bad-metadata",
    ],
)
def test_malformed_headers_are_named(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)

    reason = check_file(path)

    assert reason is not None and reason.startswith("malformed")


def test_unknown_dtypes_are_bounds_checked_only(tmp_path: Path) -> None:
    path = tmp_path / "future.safetensors"
    path.write_bytes(_raw({"t": {"dtype": "F2_NEW", "shape": [7], "data_offsets": [0, 3]}}, b"abc"))

    assert check_file(path) is None


def test_missing_or_odd_paths_are_unreadable_not_raised(tmp_path: Path) -> None:
    assert check_file(tmp_path / "absent.safetensors").startswith("unreadable")
    assert check_file(tmp_path).startswith("unreadable")
