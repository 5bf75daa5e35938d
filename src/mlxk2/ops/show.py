"""``show``: one model's object, metadata, and optionally its files and config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlxk2.cache.config import metadata, read_config
from mlxk2.cache.inspect import inspect_model
from mlxk2.resolve import resolve

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".npz", ".pt", ".pth")
TOKENIZER_NAMES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "merges.txt", "spiece.model", "sentencepiece.bpe.model")


def show_model(spec: str, *, files: bool = False, config: bool = False,
               root: Path | None = None) -> dict[str, Any]:
    """The model object plus ``metadata``; ``files`` and ``config`` on request.

    File sizes are raw bytes (``size_bytes``); the spec's human ``size`` string is
    added by the command layer.
    """
    resolved = resolve(spec, root)
    data: dict[str, Any] = {"model": inspect_model(resolved).to_dict()}
    raw_config = read_config(resolved.path) if resolved.path else None
    data["metadata"] = metadata(raw_config)
    if files:
        data["files"] = list_files(resolved.path) if resolved.path else []
    if config:
        data["config"] = raw_config
    return data


def file_type(name: str) -> str:
    base = os.path.basename(name)
    if base.endswith(WEIGHT_SUFFIXES):
        return "weights"
    if base in TOKENIZER_NAMES or base.endswith(".tiktoken"):
        return "tokenizer"
    if base.endswith(".json") or base.endswith(".jinja"):
        return "config"
    return "other"


def list_files(path: Path) -> list[dict[str, Any]]:
    """Files of the selected snapshot, sorted, with their real (blob) sizes."""
    entries = []
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(dirpath, name)
            try:
                size = os.stat(full).st_size
            except OSError:
                size = 0
            rel = os.path.relpath(full, path)
            entries.append({"name": rel, "size_bytes": size, "type": file_type(rel)})
    return sorted(entries, key=lambda e: e["name"])
