"""Where models live in the Hugging Face cache, and which snapshot is selected.

Layout (huggingface_hub's): ``<root>/models--{org}--{name}/`` holding ``blobs/``,
``snapshots/<commit>/`` (relative links into blobs) and ``refs/<branch>``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlxk2.cache.files import mtime, sha256_file

MODEL_PREFIX = "models--"
#: The Hub organisation of MLX conversions; bare names mean a model there.
DEFAULT_ORG = "mlx-community"
SEPARATOR = "--"


def cache_root() -> Path:
    """The hub cache: ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else the default.

    huggingface_hub.constants applies those rules; it is a light import.
    """
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(root: Path, repo_id: str) -> Path:
    """The ``models--org--name`` folder huggingface_hub uses for ``repo_id``.

    huggingface_hub's ``repo_folder_name`` builds the same name but validates the
    id first, and refuses names that caches do hold (non-ASCII, spaces), which
    ``list`` shows and ``rm`` must still reach; so the rule is spelled here.
    """
    return root / (MODEL_PREFIX + repo_id.replace("/", SEPARATOR))


def overlaps_cache(path: Path, root: Path | None = None) -> bool:
    """Is ``path`` the cache, inside it, or a folder holding it (links resolved)?

    Commands that write workspaces (clone, convert) refuse such targets, so
    user files never land among huggingface_hub's blobs and snapshots.
    """
    real = Path(os.path.realpath(path))
    cache = Path(os.path.realpath(cache_root() if root is None else root))
    return real == cache or cache in real.parents or real in cache.parents


def repo_id_from_folder(folder_name: str) -> str | None:
    """``models--org--name`` to ``org/name``; None for datasets, spaces and strays."""
    if not folder_name.startswith(MODEL_PREFIX):
        return None
    parts = folder_name[len(MODEL_PREFIX):].split(SEPARATOR)
    if not all(parts):
        return None
    return "/".join(parts)


def snapshot_repo_id(path: Path) -> str | None:
    """``org/name`` when ``path`` is a cache snapshot folder, else None."""
    if path.parent.name != "snapshots":
        return None
    return repo_id_from_folder(path.parent.parent.name)


@dataclass(frozen=True)
class ResolvedModel:
    """One model picked by a spec.

    ``name`` is ``org/name`` for cache models and the path as typed for
    workspaces; ``path`` is the selected snapshot (or workspace) folder, None
    when a cache model has no snapshot at all.
    """

    name: str
    path: Path | None
    cached: bool
    repo_id: str | None = None
    commit: str | None = None
    repo_dir: Path | None = None


@dataclass(frozen=True)
class CachedRepo:
    """One ``models--`` folder and the snapshots it holds."""

    repo_id: str
    folder: Path

    def snapshots(self) -> list[Path]:
        """Snapshot folders, newest first; an unreadable or odd folder gives none."""
        try:
            entries = [p for p in (self.folder / "snapshots").iterdir() if p.is_dir()]
        except OSError:
            return []
        return sorted(entries, key=mtime, reverse=True)

    def ref(self, name: str = "main") -> str | None:
        try:
            return (self.folder / "refs" / name).read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    def selected_snapshot(self) -> Path | None:
        """The ``refs/main`` commit when its snapshot exists, else the newest snapshot."""
        main = self.ref()
        if main and "/" not in main and main not in (".", ".."):
            candidate = self.folder / "snapshots" / main
            if candidate.is_dir():
                return candidate
        snapshots = self.snapshots()
        return snapshots[0] if snapshots else None


def iter_cached_repos(root: Path) -> Iterator[CachedRepo]:
    """Every model repo folder under ``root``, sorted by name; missing root gives none."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return
    for name in names:
        repo_id = repo_id_from_folder(name)
        if repo_id is not None:
            yield CachedRepo(repo_id, root / name)


def held_locks(root: Path, folder_name: str) -> tuple[str, ...]:
    """Lock files under ``.locks/<models--…>`` that some process holds right now.

    huggingface_hub leaves its lock files behind after every download, so only
    a lock another process currently holds means a download is running.
    """
    locks = root / ".locks" / folder_name
    if not locks.is_dir():
        return ()
    return tuple(sorted(p.relative_to(root).as_posix() for p in locks.rglob("*.lock")
                        if p.is_file() and _is_held(p)))


def _is_held(lock: Path) -> bool:
    try:
        import fcntl
    except ImportError:  # no flock (Windows): a present lock file is all we can see
        return True
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def store_snapshot(root: Path, repo_id: str, src_dir: Path, commit: str | None = None,
                   *, set_main: bool = True) -> Path:
    """Place a plain folder into the cache the way huggingface_hub lays it out.

    Files become blobs named by their sha256, linked from ``snapshots/<commit>``
    with relative links, and ``refs/main`` names the commit. Used by the demo
    builder and by test fixtures, so both produce caches that other tools read.

    Returns:
        The snapshot folder.
    """
    folder = repo_folder(root, repo_id)
    files = sorted(p for p in src_dir.rglob("*") if p.is_file())
    digests = {p: sha256_file(p) for p in files}
    if commit is None:
        joined = "".join(f"{p.relative_to(src_dir)}:{d}" for p, d in digests.items())
        commit = hashlib.sha1(joined.encode()).hexdigest()
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path, digest in digests.items():
        blob = folder / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / path.relative_to(src_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    if set_main:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text(commit)
    return snapshot
