"""``show``: one model's object, metadata, and optionally its files and config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxk2.cache.config import ModelMetadata, metadata, read_config
from mlxk2.cache.files import file_kind
from mlxk2.cache.inspect import ModelInfo, inspect_model
from mlxk2.output.format import human_size
from mlxk2.resolve import resolve


@dataclass(frozen=True)
class ModelFile:
    """One file of the selected snapshot, with its real (blob) size."""

    name: str
    size_bytes: int
    kind: str

    def to_dict(self) -> dict[str, Any]:
        """The spec's file entry; its ``size`` is the human string the spec shows."""
        return {"name": self.name, "size": human_size(self.size_bytes), "type": self.kind}


@dataclass(frozen=True)
class ShowResult:
    """The ``show`` data; ``files`` and ``config`` are None unless asked for."""

    model: ModelInfo
    metadata: ModelMetadata | None
    files: tuple[ModelFile, ...] | None = None
    config: dict[str, Any] | None = None
    config_requested: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model.to_dict(),
            "metadata": self.metadata.to_dict() if self.metadata else None,
        }
        if self.files is not None:
            data["files"] = [f.to_dict() for f in self.files]
        if self.config_requested:
            data["config"] = self.config
        return data


def show_model(spec: str, *, files: bool = False, config: bool = False,
               root: Path | None = None) -> ShowResult:
    """The model object plus ``metadata``; ``files`` and ``config`` on request.

    Raises:
        ModelNotFoundError, AmbiguousMatchError, ValidationError: from resolution.
    """
    resolved = resolve(spec, root)
    raw_config = read_config(resolved.path) if resolved.path else None
    listed = None
    if files:
        listed = list_files(resolved.path) if resolved.path else ()
    return ShowResult(
        model=inspect_model(resolved),
        metadata=metadata(raw_config),
        files=listed,
        config=raw_config if config else None,
        config_requested=config,
    )


def list_files(path: Path) -> tuple[ModelFile, ...]:
    """Files of the selected snapshot, sorted by name, with their real (blob) sizes."""
    entries = []
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(dirpath, name)
            try:
                size = os.stat(full).st_size
            except OSError:
                size = 0
            rel = os.path.relpath(full, path)
            entries.append(ModelFile(rel, size, file_kind(rel)))
    return tuple(sorted(entries, key=lambda e: e.name))
