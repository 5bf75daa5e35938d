"""``list``: every cached model with both checks, optionally filtered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxk2.cache.inspect import ModelInfo, inspect_model
from mlxk2.cache.layout import CachedRepo, ResolvedModel, cache_root, iter_cached_repos


@dataclass(frozen=True)
class ListResult:
    """The ``list`` data: every matching model with both checks."""

    models: tuple[ModelInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"models": [m.to_dict() for m in self.models], "count": len(self.models)}


def list_result(pattern: str | None = None, root: Path | None = None) -> ListResult:
    """:func:`list_models` as the typed result the ``list`` command reports."""
    return ListResult(tuple(list_models(pattern, root)))


def list_models(pattern: str | None = None, root: Path | None = None) -> list[ModelInfo]:
    """Inspect each cached model whose name contains ``pattern`` (case-insensitive).

    One damaged entry never stops the scan: it is reported as unhealthy.
    """
    root = cache_root() if root is None else root
    needle = (pattern or "").lower()
    return [inspect_repo(repo) for repo in iter_cached_repos(root)
            if needle in repo.repo_id.lower()]


def inspect_repo(repo: CachedRepo) -> ModelInfo:
    snapshot = repo.selected_snapshot()
    resolved = ResolvedModel(
        name=repo.repo_id, path=snapshot, cached=True, repo_id=repo.repo_id,
        commit=snapshot.name if snapshot is not None else None, repo_dir=repo.folder,
    )
    return inspect_model(resolved)
