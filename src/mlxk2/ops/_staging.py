"""Writing a new workspace folder so that no moment of it looks like a healthy model.

Shared by the ops that create a model folder from something else (``import``,
``convert``).
The folder is built hidden beside the destination, carrying an ``*.incomplete``
marker that the integrity rules count as unhealthy; it is verified, renamed
into place, and only then loses the marker. Its name carries the writer's
process id, so the next writer to the same destination removes what a killed
one left behind.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mlxk2.cache.integrity import check_integrity, workspace_report
from mlxk2.cache.layout import overlaps_cache
from mlxk2.errors import (
    FilesystemError,
    MlxkError,
    ModelUnhealthyError,
    PermissionDeniedError,
    ValidationError,
)

#: ``progress(stage, done, total)``: called as a writer's work advances; the CLI draws a bar.
Progress = Callable[[str, int, int], None]


def check_new_workspace(
    target: str, target_dir: Path, cache: Path, verb: str, *, source_dir: Path | None = None
) -> None:
    """Refuse a destination inside the cache, or one that exists and is not an empty folder.

    Args:
        target: The destination as typed, for the messages.
        target_dir: The destination with links resolved.
        cache: The hub cache, which only downloads write to.
        verb: The command, for the messages ("import").
        source_dir: A model folder the command reads: the destination may be
            neither it nor inside it.

    Raises:
        ValidationError: Naming the destination as typed.
    """
    if overlaps_cache(target_dir, cache):
        raise ValidationError(
            f"Destination '{target}' is inside the Hugging Face cache; "
            f"{verb} writes only to workspace folders"
        )
    if source_dir is not None:
        real_source = Path(os.path.realpath(source_dir))
        if target_dir == real_source:
            raise ValidationError("Source and destination are the same folder")
        if real_source in target_dir.parents:
            raise ValidationError(f"Destination '{target}' is inside the source model")
    if target_dir.exists() or target_dir.is_symlink():
        if not target_dir.is_dir():
            raise ValidationError(f"Destination '{target}' exists and is not a folder")
        if any(target_dir.iterdir()):
            raise ValidationError(f"Destination '{target}' already exists and is not empty")


@contextlib.contextmanager
def staged_folder(target: Path, marker: str, what: str) -> Iterator[Path]:
    """Yield a hidden folder to fill; on a clean exit verify it and rename it to ``target``.

    Args:
        target: The final folder: absent or empty.
        marker: The in-progress file name (must end in ``.incomplete``).
        what: Names the result in the unhealthy error ("imported model").

    Raises:
        ModelUnhealthyError: The filled folder fails the integrity rules (nothing is kept).
        PermissionDeniedError, FilesystemError: Writing failed (nothing is kept).
    """
    with filesystem_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_staging(target, marker)
        staging = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        staging.mkdir()  # unlike mkdtemp, keeps the umask's permissions for the result
    try:
        with filesystem_errors(target):
            (staging / marker).write_bytes(b"")
            yield staging
        _verify(staging, marker, what)
        with filesystem_errors(target):
            if target.exists():
                target.rmdir()  # checked empty by the caller's plan
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    with filesystem_errors(target):
        (target / marker).unlink()


@dataclass(frozen=True)
class WrittenFolder:
    """What a finished writer left in its destination, for the op's result."""

    files: int
    size_bytes: int
    health: str  # "healthy" or "unhealthy", by the integrity rules


def written_folder(target: Path) -> WrittenFolder:
    """Count, measure and check the folder :func:`staged_folder` put in place."""
    with filesystem_errors(target):
        files = [p for p in target.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
    health = "healthy" if check_integrity(target) is None else "unhealthy"
    return WrittenFolder(len(files), size, health)


def remove_abandoned_staging(target: Path, marker: str) -> None:
    """Delete hidden folders of earlier writers to ``target`` whose process is gone.

    Only folders that still carry ``marker`` are touched, so nothing finished,
    and nothing that is not ours, is ever removed.
    """
    prefix = f".{target.name}."
    for folder in target.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        writer = folder.name[len(prefix):].split(".")[0]
        if writer.isdigit() and not _process_alive(int(writer)) and (folder / marker).is_file():
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _verify(staging: Path, marker: str, what: str) -> None:
    """The folder must be healthy apart from its own in-progress marker."""
    marker_note = f"Unfinished files: {marker}"
    problems = [p for p in workspace_report(staging)["anomalies"] if p != marker_note]
    if problems:
        raise ModelUnhealthyError(f"The {what} would be unhealthy: {problems[0]}")


@contextlib.contextmanager
def filesystem_errors(target: Path) -> Iterator[None]:
    """OS errors while writing near ``target`` as the CLI's permission/filesystem errors."""
    try:
        yield
    except MlxkError:
        raise
    except PermissionError as exc:
        raise PermissionDeniedError(f"Permission denied writing near '{target}': {exc}") from exc
    except OSError as exc:
        raise FilesystemError(f"Cannot write '{target}': {exc}") from exc
