"""Facts about single files and folders that several commands need, declared once:
what kind a model file is, its mtime, its sha256, a folder's size, removing a tree."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Protocol

#: Weight file suffixes and the format each one is.
WEIGHT_FORMATS = {
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".bin": "pytorch",
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".npz": "npz",
}
#: Weight formats MLX loads into memory itself.
MLX_WEIGHT_SUFFIXES = (".safetensors", ".npz")
TORCH_WEIGHT_SUFFIXES = tuple(s for s, f in WEIGHT_FORMATS.items() if f == "pytorch")
#: Files that are a tokenizer on their own (``*.tiktoken`` too).
TOKENIZER_FILES = frozenset({
    "tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
    "vocab.json", "vocab.txt", "tiktoken.model",
})
#: Tokenizer parts that need a companion file (``merges.txt`` goes with ``vocab.json``).
TOKENIZER_PARTS = frozenset({"merges.txt"})
#: Training leftovers with weight suffixes that hold no model weights.
NOT_WEIGHTS = frozenset({"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"})


def is_weight_file(name: str) -> bool:
    base = os.path.basename(name)
    return os.path.splitext(base)[1] in WEIGHT_FORMATS and base not in NOT_WEIGHTS


def is_tokenizer_file(name: str) -> bool:
    base = os.path.basename(name)
    return base in TOKENIZER_FILES or base.endswith(".tiktoken")


def file_kind(name: str) -> str:
    """``weights``, ``tokenizer``, ``config`` or ``other``, as ``show --files`` reports."""
    base = os.path.basename(name)
    if is_weight_file(base):
        return "weights"
    if is_tokenizer_file(base) or base in TOKENIZER_PARTS:
        return "tokenizer"
    if base.endswith((".json", ".jinja")):
        return "config"
    return "other"


def mtime(path: Path) -> float:
    """Modification time, or 0.0 when the path cannot be read."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def file_digest(path: Path, digest: Digest) -> str:
    """Feed a file to ``digest`` in 1 MiB chunks and return its hex digest."""
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    return file_digest(path, hashlib.sha256())


def folder_bytes(folder: Path, *, skip_hidden: bool = False) -> int:
    """Bytes of the files below ``folder`` (links to files followed); unreadable ones count 0.

    Args:
        folder: The folder to measure.
        skip_hidden: Leave out hidden folders such as ``.git`` and ``.cache``.
    """
    total = 0
    for dirpath, dirs, names in os.walk(folder):
        if skip_hidden:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def remove_tree(path: Path, *, ignore_errors: bool = False) -> None:
    """Remove a file, a link (never its target) or a folder with everything in it."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif ignore_errors:
        shutil.rmtree(path, ignore_errors=True)
    elif path.is_dir():
        shutil.rmtree(path)
