"""``rm``: delete a cached model, or one snapshot of it, planned before executed.

:func:`plan_removal` resolves the spec and lists what would go; the command
shows or confirms that plan, then :func:`execute_removal` deletes exactly it.
Nothing outside the cache root is ever touched, and workspaces are refused.

Lock files: huggingface_hub leaves ``.locks/models--…/*.lock`` files behind
after every download, so a lock *file* means nothing by itself. A lock counts
as active when another process holds it (an ``flock`` probe fails).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxk2.cache.files import remove_tree
from mlxk2.cache.layout import cache_root, held_locks, repo_folder
from mlxk2.errors import (
    AmbiguousMatchError,
    LocksPresentError,
    OperationError,
    PermissionDeniedError,
    ValidationError,
)
from mlxk2.resolve import expand_repo_id, is_workspace_spec, resolve, split_revision


@dataclass(frozen=True)
class RemovalPlan:
    """Everything one ``rm`` would delete, decided before anything is deleted."""

    model: str
    spec: str
    exact: bool  # the spec named this model, not merely matched it
    root: Path
    repo_dir: Path
    snapshot: Path | None  # one snapshot (``name@hash``), or None for the whole model
    whole_model: bool
    active_locks: tuple[str, ...]  # relative to the cache root

    @property
    def target(self) -> str:
        """What is being deleted, for prompts and messages."""
        if self.whole_model:
            return self.model
        assert self.snapshot is not None
        return f"{self.model}@{self.snapshot.name}"

    def preview(self) -> dict[str, Any]:
        """``rm --dry-run`` data: what would go, and whether a lock would stop it."""
        data: dict[str, Any] = {"model": self.model, "action": "would_delete",
                                "message": f"Would delete {self.target}",
                                "locks_detected": bool(self.active_locks),
                                "lock_files": list(self.active_locks)}
        if not self.whole_model:
            assert self.snapshot is not None
            data["snapshot"] = self.snapshot.name
        return data


@dataclass(frozen=True)
class RemovalResult:
    model: str
    snapshot: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"model": self.model, "action": "deleted", "message": self.message}
        if self.snapshot is not None:
            data["snapshot"] = self.snapshot
        return data


def plan_removal(spec: str, root: Path | None = None) -> RemovalPlan:
    """Decide what ``rm spec`` deletes.

    Raises:
        ValidationError: a workspace path or a malformed name.
        ModelNotFoundError: nothing in the cache matches (raised by resolve).
        AmbiguousMatchError: several models match (``data.matches``).
    """
    workspace_refusal = ValidationError(
        f"rm only deletes models from the cache; '{spec}' is a folder path. "
        "Delete a workspace yourself.")
    if is_workspace_spec(spec):
        raise workspace_refusal
    root = cache_root() if root is None else root
    try:
        resolved = resolve(spec, root)
    except AmbiguousMatchError as exc:
        matches = exc.details.get("matches", [])
        raise AmbiguousMatchError(
            f"{exc.message}. Please specify which model to delete.",
            data={"matches": matches}, matches=matches) from exc
    if resolved.repo_id is None or resolved.repo_dir is None:  # a local folder, not the cache
        raise workspace_refusal
    name, rev = split_revision(spec)
    exact = resolved.repo_id.lower() in {name.lower(), expand_repo_id(name).lower()}
    repo_dir = repo_folder(root, resolved.repo_id)
    _ensure_inside(root, repo_dir)
    snapshot = None
    whole = True
    if rev is not None and resolved.path is not None:
        snapshot = resolved.path
        others = [p for p in _snapshots(repo_dir) if p.name != snapshot.name]
        whole = not others
    return RemovalPlan(resolved.repo_id, spec, exact, root, repo_dir, snapshot, whole,
                       held_locks(root, repo_dir.name))


def execute_removal(plan: RemovalPlan, *, force: bool = False) -> RemovalResult:
    """Delete what the plan lists.

    Raises:
        LocksPresentError: another process holds a lock on this model (unless ``force``).
        PermissionDeniedError: the files cannot be deleted.
        OperationError: another filesystem failure.
    """
    if plan.active_locks and not force:
        raise LocksPresentError("Model has active locks. Use --force to override.",
                                data={"model": plan.model, "locks_detected": True,
                                      "lock_files": list(plan.active_locks)})
    try:
        if plan.whole_model:
            remove_tree(plan.repo_dir)
            remove_tree(plan.root / ".locks" / plan.repo_dir.name)
            return RemovalResult(plan.model, None, f"Successfully deleted {plan.model}")
        assert plan.snapshot is not None
        _remove_snapshot(plan.repo_dir, plan.snapshot)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        if isinstance(exc, PermissionError):
            raise PermissionDeniedError(f"Permission denied: cannot delete {plan.target} ({why})",
                                        data={"model": plan.model}) from exc
        raise OperationError(f"Could not delete {plan.target}: {why}",
                             data={"model": plan.model}) from exc
    return RemovalResult(plan.model, plan.snapshot.name,
                         f"Successfully deleted snapshot {plan.snapshot.name} of {plan.model}")


def _ensure_inside(root: Path, path: Path) -> None:
    """Refuse anything that is not a ``models--`` folder directly under the cache root."""
    real_root = root.resolve()
    if path.parent.resolve() != real_root or not path.name.startswith("models--"):
        raise ValidationError(f"Refusing to delete '{path}': not a model folder of the cache")


def _snapshots(repo_dir: Path) -> list[Path]:
    try:
        return [p for p in (repo_dir / "snapshots").iterdir() if p.is_dir()]
    except OSError:
        return []


def _remove_snapshot(repo_dir: Path, snapshot: Path) -> None:
    """One snapshot, the refs naming it, and the blobs no other snapshot links to."""
    blobs = repo_dir / "blobs"
    kept: set[str] = set()
    for other in _snapshots(repo_dir):
        if other.name != snapshot.name:
            kept.update(_linked_blobs(other, blobs))
    unused = _linked_blobs(snapshot, blobs) - kept
    remove_tree(snapshot)
    for name in sorted(unused):
        (blobs / name).unlink(missing_ok=True)
    refs = repo_dir / "refs"
    for ref in refs.rglob("*") if refs.is_dir() else ():
        if ref.is_file() and ref.read_text(encoding="utf-8", errors="replace").strip() \
                == snapshot.name:
            ref.unlink()


def _linked_blobs(snapshot: Path, blobs: Path) -> set[str]:
    found = set()
    real_blobs = blobs.resolve()
    for link in snapshot.rglob("*"):
        if link.is_symlink():
            target = Path(os.path.realpath(link))
            if target.parent == real_blobs:
                found.add(target.name)
    return found
