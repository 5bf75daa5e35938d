"""``pull``: download a model into the Hugging Face cache, or repair a broken copy.

The files go through ``huggingface_hub.snapshot_download`` into the normal cache,
so ``hf``, mlx-lm and mlxk2 all see the same blobs. A model that is cached and
healthy is left alone (``already_exists``); one that is cached but unhealthy is
checked file by file against the Hub, the broken files are dropped and fetched
again (``success``, with a message saying it was repaired).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxk2.cache.integrity import check_integrity
from mlxk2.cache.layout import cache_root, held_locks, repo_folder
from mlxk2.errors import DownloadFailedError, LocksPresentError, MlxkError
from mlxk2.ops._hub import download_snapshot, parse_spec, run_interruptible, translate


@dataclass(frozen=True)
class PullResult:
    """What happened; ``repaired`` lists the files fetched again for a broken model."""

    model: str
    download_status: str  # "success" | "already_exists"
    message: str
    snapshot: Path
    repaired: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The spec's pull data (no filesystem paths)."""
        data: dict[str, Any] = {
            "model": self.model, "download_status": self.download_status,
            "message": self.message, "expanded_name": self.model,
        }
        if self.repaired:
            data["repaired_files"] = list(self.repaired)
        return data


def failure_data(model: str | None, status: str) -> dict[str, Any]:
    """The partial data the spec shows with a pull error."""
    return {"model": model, "download_status": status, "message": "", "expanded_name": None}


def pull(spec: str, *, root: Path | None = None, tqdm_class: type | None = None,
         token: str | None = None) -> PullResult:
    """Make ``spec`` (``name`` or ``name@revision``) present and healthy in the cache.

    Args:
        spec: Model name; short names mean ``mlx-community/<name>``.
        root: Hub cache folder; defaults to huggingface_hub's rules.
        tqdm_class: Progress bar class; None draws nothing.
        token: Hub token; None lets huggingface_hub read ``HF_TOKEN``.

    Raises:
        ValidationError: malformed name.
        DownloadFailedError, AccessDeniedError, NetworkError: the Hub said no.
        PermissionDeniedError, OperationError: the cache could not be written.
    """
    try:
        repo_id, revision = parse_spec(spec)
    except MlxkError as exc:
        exc.data = failure_data(None, "error")
        raise
    root = cache_root() if root is None else root
    snapshot = _cached_snapshot(root, repo_id, revision)
    problem = _snapshot_problem(root, repo_id, snapshot) if snapshot is not None else None
    if snapshot is not None and problem is None:
        return PullResult(repo_id, "already_exists",
                          f"Model {repo_id} already exists in cache", snapshot)
    if snapshot is not None:
        _refuse_while_downloading(root, repo_id)
    try:
        if snapshot is not None:
            return _repair(root, repo_id, snapshot, problem or "", tqdm_class, token)
        path = download_snapshot(repo_id, revision, root, tqdm_class, token)
    except KeyboardInterrupt:
        _mark_unfinished(repo_folder(root, repo_id) / "blobs")
        raise
    except MlxkError:
        raise
    except Exception as exc:
        raise translate(exc, DownloadFailedError, repo_id,
                        failure_data(repo_id, "failed")) from exc
    return PullResult(repo_id, "success", f"Successfully downloaded model {repo_id}", path)


def _refuse_while_downloading(root: Path, repo_id: str) -> None:
    """A repair deletes unfinished files; never those of a download still running."""
    locks = held_locks(root, repo_folder(root, repo_id).name)
    if locks:
        raise LocksPresentError(
            f"Another process is downloading {repo_id}; run pull again when it has finished",
            data=failure_data(repo_id, "in_progress"), locks_detected=True,
            lock_files=list(locks))


def _cached_snapshot(root: Path, repo_id: str, revision: str | None) -> Path | None:
    """The snapshot folder ``revision`` names in the cache, if it exists (no network)."""
    folder = repo_folder(root, repo_id)
    rev = revision or "main"
    commit: str | None = rev if len(rev) == 40 and (folder / "snapshots" / rev).is_dir() else None
    if commit is None:
        try:
            commit = (folder / "refs" / rev).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
    snapshot = folder / "snapshots" / commit
    return snapshot if commit and snapshot.is_dir() else None


def _snapshot_problem(root: Path, repo_id: str, snapshot: Path) -> str | None:
    """Why a cached snapshot is not a finished download: an integrity problem, or
    files that huggingface_hub's tree listing for this commit names but that are absent."""
    problem = check_integrity(snapshot)
    if problem:
        return problem
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        listed = get_cached_repo_tree(repo_id, revision=snapshot.name, cache_dir=root)
    except (CachedRepoTreeNotFoundError, OSError, ValueError):
        return None  # no listing (e.g. a hand-made cache entry): integrity is all we know
    missing = sorted(f.path for f in listed if not (snapshot / f.path).is_file())
    return f"Download incomplete: missing {', '.join(missing)}" if missing else None


def _repair(root: Path, repo_id: str, snapshot: Path, problem: str, tqdm_class: type | None,
            token: str | None) -> PullResult:
    """Check every cached file against the Hub, drop the bad ones, fetch what is missing."""
    from huggingface_hub import HfApi

    commit = snapshot.name
    report = run_interruptible(HfApi(token=token).verify_repo_checksums, repo_id,
                               revision=commit, cache_dir=root)
    broken = sorted(m["path"] for m in report.mismatches)
    for rel in broken:
        _discard(snapshot / rel)
    for rel in report.missing_paths:
        link = snapshot / rel
        if link.is_symlink():
            link.unlink()
    _discard_unfinished(snapshot.parent.parent / "blobs")
    refetch = tuple(sorted({*broken, *report.missing_paths}))
    if refetch:
        download_snapshot(repo_id, commit, root, tqdm_class, token)
        message = (f"Repaired model {repo_id}: re-downloaded {len(refetch)} missing or broken "
                   f"file(s) ({', '.join(refetch)})")
    elif check_integrity(snapshot) is None:
        message = f"Repaired model {repo_id}: removed leftovers of an interrupted download"
    else:
        return PullResult(repo_id, "already_exists",
                          f"Model {repo_id} already exists in cache and matches the Hub, "
                          f"but it is not usable: {problem}", snapshot)
    return PullResult(repo_id, "success", message, snapshot, refetch)


def _discard(link: Path) -> None:
    """Remove a snapshot entry and the blob it points to, so the next download refetches."""
    if link.is_symlink():
        target = link.resolve()
        link.unlink()
        if target.is_file() and target.parent.name == "blobs":
            target.unlink()
    elif link.is_file():
        link.unlink()


def _mark_unfinished(blobs: Path) -> None:
    """Leave an ``.incomplete`` entry, huggingface_hub's sign of an unfinished download,
    so that an interrupted pull shows as unhealthy even between two files."""
    if blobs.is_dir():
        (blobs / "mlxk2-pull-interrupted.incomplete").touch()


def _discard_unfinished(blobs: Path) -> None:
    """Temporary files an interrupted download left behind; they are never resumed."""
    try:
        leftovers = [e.path for e in os.scandir(blobs) if e.name.endswith(".incomplete")]
    except OSError:
        return
    for path in leftovers:
        Path(path).unlink(missing_ok=True)
