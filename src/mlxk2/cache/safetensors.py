"""Header-only safetensors reader.

A safetensors file is an 8-byte little-endian header length, a JSON header and
the tensor bytes. Reading only the header is enough to catch the truncated and
malformed downloads that a size or existence check misses, and to rebuild a
shard index, without touching tensor data (and without importing mlx).
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The safetensors format caps the header at 100 MB; anything larger is corrupt.
MAX_HEADER_BYTES = 100 * 1024 * 1024

# Bits per element for the dtypes the format defines; unknown dtypes skip the
# size check but still get the bounds check.
_DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "U16": 16,
    "I16": 16,
    "F16": 16,
    "BF16": 16,
    "U32": 32,
    "I32": 32,
    "F32": 32,
    "U64": 64,
    "I64": 64,
    "F64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}


class SafetensorsError(ValueError):
    """The file is not a complete, well-formed safetensors file.

    ``reason`` is a short phrase such as ``"truncated"`` that callers put
    after the file name.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in the header."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data, as declared by the offsets."""
        return self.end - self.start


@dataclass(frozen=True)
class SafetensorsHeader:
    """The parsed header of one safetensors file."""

    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str]
    header_bytes: int
    file_size: int

    @property
    def data_bytes(self) -> int:
        """Sum of tensor sizes, the figure an index's ``metadata.total_size`` holds."""
        return sum(t.nbytes for t in self.tensors)


def read_header(path: Path) -> SafetensorsHeader:
    """Parse and validate a safetensors header without reading tensor data.

    Args:
        path: The file (symlinks are followed).

    Returns:
        The header, with every tensor's offsets checked against the file size.

    Raises:
        SafetensorsError: The file is truncated or malformed.
        OSError: The file cannot be opened or read.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise SafetensorsError("truncated: shorter than the 8-byte header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_HEADER_BYTES:
            raise SafetensorsError(f"malformed: absurd header length {header_len}")
        if 8 + header_len > size:
            raise SafetensorsError(
                f"truncated: header needs {8 + header_len} bytes, file has {size}"
            )
        raw = fh.read(header_len)
    if len(raw) < header_len:
        raise SafetensorsError("truncated: header cut short while reading")
    return _parse(raw, header_len, size)


def check_file(path: Path) -> str | None:
    """Return why ``path`` is not a usable safetensors file, or None if it is.

    Unreadable files are reported too, so one bad file never raises.
    """
    try:
        read_header(path)
    except SafetensorsError as exc:
        return exc.reason
    except OSError as exc:
        return f"unreadable ({exc.strerror or type(exc).__name__})"
    return None


def _parse(raw: bytes, header_len: int, size: int) -> SafetensorsHeader:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsError("malformed: header is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise SafetensorsError("malformed: header is not a JSON object")
    data_size = size - 8 - header_len
    metadata: dict[str, str] = {}
    tensors: list[TensorInfo] = []
    for name, entry in doc.items():
        if name == "__metadata__":
            if not isinstance(entry, dict):
                raise SafetensorsError("malformed: __metadata__ is not an object")
            metadata = {str(k): str(v) for k, v in entry.items()}
            continue
        tensor = _tensor(name, entry)
        if tensor.end > data_size:
            raise SafetensorsError(
                f"truncated: tensor '{name}' ends at byte {tensor.end} of {data_size}"
            )
        tensors.append(tensor)
    return SafetensorsHeader(tuple(tensors), metadata, header_len, size)


def _tensor(name: str, entry: Any) -> TensorInfo:
    bad = SafetensorsError(f"malformed: bad entry for tensor '{name}'")
    if not isinstance(entry, dict):
        raise bad
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or not isinstance(shape, list) or not isinstance(offsets, list):
        raise bad
    if not all(_is_uint(d) for d in shape) or len(offsets) != 2 or not all(map(_is_uint, offsets)):
        raise bad
    start, end = offsets
    if start > end:
        raise bad
    bits = _DTYPE_BITS.get(dtype)
    if bits is not None and end - start != math.ceil(math.prod(shape) * bits / 8):
        raise SafetensorsError(f"malformed: tensor '{name}' size does not match its shape")
    return TensorInfo(name, dtype, tuple(shape), start, end)


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
