"""``clone``: turn a Hub model into a workspace, a plain folder of real files.

The download goes into a temporary cache beside the target
(``.<target>.mlxk2-clone``), so the user's cache stays untouched and both live on
the same filesystem. The files are then copied (copy-on-write where the
filesystem can: reflink on Linux, clonefile on macOS; a plain copy otherwise)
into a staging folder that becomes the target only once complete (renamed, or
moved into an existing empty folder with config.json last). An interrupted clone
therefore never leaves a target that looks healthy, and running it again reuses
what the temporary cache already holds.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxk2.cache.files import remove_tree
from mlxk2.cache.layout import overlaps_cache
from mlxk2.errors import (
    AccessDeniedError,
    CloneFailedError,
    FilesystemError,
    MlxkError,
    NetworkError,
    OperationError,
    PermissionDeniedError,
    ValidationError,
)
from mlxk2.ops._hub import download_snapshot, parse_spec, translate

CLONE_CACHE_SUFFIX = ".mlxk2-clone"
STAGING_SUFFIX = ".mlxk2-partial"


@dataclass(frozen=True)
class CloneResult:
    model: str
    target_dir: str  # as the user typed it
    path: Path
    files: int

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "clone_status": "success",
                "message": f"Cloned to {self.target_dir}", "target_dir": self.target_dir,
                "expanded_name": self.model}


def clone_cache_dir(target: Path) -> Path:
    """The temporary cache a clone of ``target`` downloads into."""
    return target.parent / f".{target.name}{CLONE_CACHE_SUFFIX}"


def clone(spec: str, target_dir: str, *, tqdm_class: type | None = None,
          token: str | None = None) -> CloneResult:
    """Download ``spec`` (``name[@rev]``) and write it as real files into ``target_dir``.

    Raises:
        ValidationError: malformed name, or a target that exists and is not empty.
        CloneFailedError, AccessDeniedError, NetworkError: the Hub said no.
        FilesystemError, PermissionDeniedError: the files could not be written.
    """
    target = Path(target_dir).expanduser().resolve()

    def data(model: str | None, status: str) -> dict[str, Any]:
        return {"model": model, "clone_status": status, "target_dir": target_dir}

    try:
        repo_id, revision = parse_spec(spec)
    except MlxkError as exc:
        exc.data = data(None, "error")
        raise
    if overlaps_cache(target):
        raise ValidationError(f"Target directory '{target_dir}' is inside the Hugging Face "
                              "cache; clone writes workspaces elsewhere", data=data(None, "error"))
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValidationError(f"Target directory '{target_dir}' already exists and is not empty",
                              data=data(None, "error"))
    cache = clone_cache_dir(target)
    staging = target.parent / f".{target.name}{STAGING_SUFFIX}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        snapshot = download_snapshot(repo_id, revision, cache, tqdm_class, token)
        remove_tree(staging, ignore_errors=True)
        count = _copy_tree(snapshot, staging)
        if target.exists():
            _move_into(staging, target)  # an existing empty folder, maybe the shell's cwd
        else:
            os.replace(staging, target)
    except KeyboardInterrupt:
        # the temporary cache stays: the next clone resumes from it
        remove_tree(staging, ignore_errors=True)
        raise
    except Exception as exc:
        remove_tree(staging, ignore_errors=True)
        error = _classify(translate(exc, CloneFailedError, repo_id, data(repo_id, "failed")),
                          exc, target_dir)
        if not isinstance(error, NetworkError):
            remove_tree(cache, ignore_errors=True)
        raise error from exc
    remove_tree(cache, ignore_errors=True)
    return CloneResult(repo_id, target_dir, target, count)


def _classify(error: MlxkError, exc: BaseException, target_dir: str) -> MlxkError:
    """Clone reports its own statuses: access_denied and filesystem_error."""
    data = dict(error.data or {})
    if isinstance(error, AccessDeniedError):
        error.data = {**data, "clone_status": "access_denied"}
    elif isinstance(error, PermissionDeniedError):
        error.data = {**data, "clone_status": "filesystem_error"}
    elif isinstance(error, OperationError):
        return FilesystemError(f"Cannot write the workspace '{target_dir}': {exc}",
                               data={**data, "clone_status": "filesystem_error"})
    return error


def _copy_tree(snapshot: Path, dest: Path) -> int:
    """Copy a snapshot's files (following its links into blobs) as real files."""
    dest.mkdir(parents=True)
    count = 0
    for src in sorted(snapshot.rglob("*")):
        if src.is_dir():
            continue
        out = dest / src.relative_to(snapshot)
        out.parent.mkdir(parents=True, exist_ok=True)
        copy_file(Path(os.path.realpath(src)), out)
        count += 1
    return count


def copy_file(src: Path, dst: Path) -> str:
    """Copy one file, sharing its blocks when the filesystem allows.

    Returns:
        ``"clonefile"`` (APFS), ``"reflink"`` (Btrfs, XFS, ...) or ``"copy"``.
    """
    if sys.platform == "darwin" and _clonefile(src, dst):
        return "clonefile"
    if sys.platform.startswith("linux") and _reflink(src, dst):
        return "reflink"
    shutil.copyfile(src, dst)
    return "copy"


def _reflink(src: Path, dst: Path) -> bool:
    import fcntl

    ficlone = 0x40049409  # _IOW(0x94, 9, int) from linux/fs.h
    try:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            fcntl.ioctl(fout.fileno(), ficlone, fin.fileno())
    except OSError:
        dst.unlink(missing_ok=True)
        return False
    return True


def _clonefile(src: Path, dst: Path) -> bool:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        result = libc.clonefile(os.fsencode(src), os.fsencode(dst), 0)
    except (OSError, AttributeError):
        return False
    return bool(result == 0)


def _move_into(staging: Path, target: Path) -> None:
    """Move staged entries into ``target``, config.json last: a move cut short leaves
    a folder without config.json, which never passes as a healthy model."""
    entries = sorted(staging.iterdir(), key=lambda p: p.name == "config.json")
    for entry in entries:
        os.replace(entry, target / entry.name)
    staging.rmdir()
