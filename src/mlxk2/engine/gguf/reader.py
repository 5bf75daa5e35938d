"""Read a GGUF file's header: metadata and tensor table, checked against the file size.

The ``gguf`` package's ``GGUFReader`` builds a numpy view for every part of
every field, which takes seconds on a 50k-token vocabulary; this reader walks
the same layout with :mod:`struct` in a fraction of that. Tensor data is not
read here: :func:`tensor_bytes` maps one tensor's bytes from disk on demand.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mlxk2.errors import ModelIncompatibleError, ModelUnhealthyError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
_SCALARS = {  # GGUF value type -> struct code
    0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d",
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header lists it; ``shape`` is row-major (numpy order)."""

    name: str
    type_id: int
    shape: tuple[int, ...]
    offset: int  # from the start of the file
    n_bytes: int

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.type_id)


@dataclass(frozen=True)
class GgufHeader:
    """Everything before the tensor data."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))


def ggml_type_name(type_id: int) -> str:
    """``Q4_K`` for 12; ``type 99`` for an id the ``gguf`` package does not know."""
    from gguf import GGMLQuantizationType

    try:
        return GGMLQuantizationType(type_id).name
    except ValueError:
        return f"type {type_id}"


def read_header(path: Path) -> GgufHeader:
    """Parse the header and check that every tensor lies inside the file.

    Raises:
        ModelIncompatibleError: Not a GGUF file, or a version or tensor type this
            reader cannot size.
        ModelUnhealthyError: The file is truncated or its header is malformed.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        try:
            header = _parse(handle, path)
        except (struct.error, UnicodeDecodeError, MemoryError, OverflowError) as exc:
            raise ModelUnhealthyError(f"Truncated or malformed GGUF header in {path.name}") from exc
    for tensor in header.tensors:
        if tensor.offset + tensor.n_bytes > size:
            raise ModelUnhealthyError(
                f"Truncated GGUF file {path.name}: tensor '{tensor.name}' ends at byte "
                f"{tensor.offset + tensor.n_bytes}, the file has {size}"
            )
    return header


def tensor_bytes(header: GgufHeader, tensor: TensorInfo) -> np.ndarray:
    """The tensor's raw bytes, memory-mapped, shaped ``(*rows, bytes_per_row)``."""
    with header.path.open("rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    data = np.frombuffer(mapped, dtype=np.uint8, count=tensor.n_bytes, offset=tensor.offset)
    rows = tensor.shape[:-1]
    return data.reshape(*rows, tensor.n_bytes // max(1, int(np.prod(rows, dtype=np.int64))))


def _parse(handle: BinaryIO, path: Path) -> GgufHeader:
    reader = _Reader(handle)
    if handle.read(4) != MAGIC:
        raise ModelIncompatibleError(f"{path.name} is not a GGUF file")
    version = reader.scalar("I")
    if version not in (2, 3):
        raise ModelIncompatibleError(
            f"{path.name}: GGUF version {version} is not supported (2 and 3 are)"
        )
    tensor_count, kv_count = reader.scalar("Q"), reader.scalar("Q")
    metadata = {}
    for _ in range(kv_count):
        key = reader.string()
        metadata[key] = reader.value(reader.scalar("I"))
    infos = []
    for _ in range(tensor_count):
        name = reader.string()
        dims = [reader.scalar("Q") for _ in range(reader.scalar("I"))]
        infos.append((name, dims, reader.scalar("I"), reader.scalar("Q")))
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    start = -(-handle.tell() // alignment) * alignment
    tensors = tuple(
        TensorInfo(name, type_id, tuple(reversed(dims)), start + offset, _n_bytes(type_id, dims))
        for name, dims, type_id, offset in infos
    )
    return GgufHeader(path, version, metadata, tensors)


def _n_bytes(type_id: int, dims: list[int]) -> int:
    """Bytes a tensor occupies: whole blocks per row of ``dims[0]`` elements."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
    except (ValueError, KeyError) as exc:
        raise ModelIncompatibleError(f"GGUF tensor type id {type_id} is unknown") from exc
    elements = int(np.prod(dims, dtype=np.int64))
    return elements // block * block_bytes


class _Reader:
    """Little-endian GGUF values from a file."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle

    def scalar(self, code: str) -> Any:
        size = struct.calcsize(code)
        return struct.unpack("<" + code, self._exact(size))[0]

    def string(self) -> str:
        return self._exact(self.scalar("Q")).decode("utf-8")

    def value(self, value_type: int) -> Any:
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            item_type, count = self.scalar("I"), self.scalar("Q")
            if item_type == _STRING:
                return [self.string() for _ in range(count)]
            if item_type in _SCALARS:
                code = _SCALARS[item_type]
                raw = self._exact(struct.calcsize(code) * count)
                return np.frombuffer(raw, dtype=np.dtype("<" + code)).tolist()
            return [self.value(item_type) for _ in range(count)]
        if value_type in _SCALARS:
            return self.scalar(_SCALARS[value_type])
        raise struct.error(f"unknown GGUF value type {value_type}")

    def _exact(self, size: int) -> bytes:
        data = self._handle.read(size)
        if len(data) != size:
            raise struct.error("unexpected end of file")
        return data
