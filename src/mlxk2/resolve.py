"""Turning what the user typed into one model: cache name, short name, substring,
``name@hash`` or workspace path. Every command resolves through here."""

from __future__ import annotations

import re
from pathlib import Path

from mlxk2.cache.layout import (
    DEFAULT_ORG,
    CachedRepo,
    ResolvedModel,
    cache_root,
    iter_cached_repos,
)
from mlxk2.errors import AmbiguousMatchError, ModelNotFoundError, ValidationError

MAX_NAME_LENGTH = 96
_HASH_RE = re.compile(r"^[0-9a-fA-F]{1,40}$")
_REF_RE = re.compile(r"^[\w.\-/]+$")
_SEGMENT_RE = re.compile(r"^[\w.\-]+$", re.UNICODE)
_WORKSPACE_PREFIXES = ("./", "../", "/", "~")


def is_workspace_spec(spec: str) -> bool:
    """Paths are explicit (``./x``, ``/abs``, ``~/x``) or end in a slash, as tab completion does."""
    return spec in (".", "..") or spec.startswith(_WORKSPACE_PREFIXES) or spec.endswith("/")


def split_revision(spec: str) -> tuple[str, str | None]:
    """``name@rev`` to ``("name", "rev")``: a commit-hash prefix or a ref such as a branch.

    The first ``@`` splits: a model name never holds one, a git ref may
    (``org/x@feat@2`` is revision ``feat@2``).

    Raises:
        ValidationError: an ``@`` with nothing (or only spaces) after it.
    """
    name, sep, rev = spec.partition("@")
    if not sep or not name:
        return spec, None
    if not rev.strip():
        raise ValidationError(f"Empty revision after '@' in '{spec}'")
    return name, rev


def validate_model_name(name: str) -> None:
    """Reject names the Hub could never hold, before any lookup or download.

    Raises:
        ValidationError: empty, longer than 96 characters, or with empty,
            doubled, dot-only or otherwise invalid path segments.
    """
    if not name or not name.strip():
        raise ValidationError("Model name cannot be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError(f"Model name too long: {len(name)}/{MAX_NAME_LENGTH} characters")
    segments = name.split("/")
    for segment in segments:
        if not segment or segment in (".", "..") or not _SEGMENT_RE.match(segment) \
                or "--" in segment:
            raise ValidationError(f"Invalid model name '{name}': bad segment '{segment}'")
    if len(segments) > 2:
        raise ValidationError(f"Invalid model name '{name}': expected 'org/name'")


def expand_repo_id(name: str) -> str:
    """A bare name means ``mlx-community/<name>``, as on the Hub's MLX shelf."""
    return name if "/" in name else f"{DEFAULT_ORG}/{name}"


def resolve(spec: str, root: Path | None = None) -> ResolvedModel:
    """Pick exactly one model for ``spec``.

    Order: workspace path; exact ``org/name``; ``mlx-community/<spec>``; a
    unique exact short name; a unique case-insensitive substring; an existing
    local model folder. ``@rev`` then picks a snapshot by ref or commit prefix.

    Raises:
        ValidationError: malformed name, or a path that is not a model folder.
        ModelNotFoundError: nothing matches (``available_hashes`` for a bad hash).
        AmbiguousMatchError: several models match (``matches``, sorted).
    """
    if is_workspace_spec(spec):
        return resolve_workspace(spec)
    name, rev = split_revision(spec)
    root = cache_root() if root is None else root
    repos = list(iter_cached_repos(root))
    if not any(r.repo_id == name for r in repos):  # a name list printed always resolves
        validate_model_name(name)
    try:
        repo = _match_repo(name, repos)
    except ModelNotFoundError:
        if rev is None and (Path(spec) / "config.json").is_file():
            return resolve_workspace(spec)  # a local folder typed without ./
        raise
    snapshot = repo.selected_snapshot() if rev is None else _match_snapshot(repo, rev)
    return ResolvedModel(
        name=repo.repo_id,
        path=snapshot,
        cached=True,
        repo_id=repo.repo_id,
        commit=snapshot.name if snapshot is not None else None,
        repo_dir=repo.folder,
    )


def resolve_workspace(spec: str) -> ResolvedModel:
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(f"No model folder at '{spec}'")
    if not (path / "config.json").exists() and not any(path.glob("*.gguf")):
        raise ValidationError(f"'{spec}' is not a model folder (no config.json)")
    return ResolvedModel(name=spec, path=path, cached=False)


def _match_repo(name: str, repos: list[CachedRepo]) -> CachedRepo:
    by_id = {r.repo_id: r for r in repos}
    lowered = name.lower()
    candidates = (
        [by_id[name]] if name in by_id else [],
        [r for r in repos if r.repo_id.lower() == lowered],
        [by_id[f"{DEFAULT_ORG}/{name}"]] if "/" not in name and f"{DEFAULT_ORG}/{name}" in by_id
        else [],
        [r for r in repos if r.repo_id.rsplit("/", 1)[-1].lower() == lowered],
        [r for r in repos if lowered in r.repo_id.lower()],
    )
    for found in candidates:
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise AmbiguousMatchError(
                f"Multiple models match '{name}'",
                matches=sorted(r.repo_id for r in found),
            )
    raise ModelNotFoundError(f"No model found matching '{name}'")


def _match_snapshot(repo: CachedRepo, rev: str) -> Path:
    """A ref (``refs/<rev>``, e.g. a pulled branch) first, else a commit-hash prefix."""
    if _REF_RE.match(rev) and ".." not in rev.split("/"):
        commit = repo.ref(rev)
        if commit and (repo.folder / "snapshots" / commit).is_dir():
            return repo.folder / "snapshots" / commit
    snapshots = repo.snapshots()
    found = [s for s in snapshots if _HASH_RE.match(rev) and s.name.lower().startswith(rev.lower())]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise AmbiguousMatchError(
            f"Multiple snapshots of '{repo.repo_id}' match '@{rev}'",
            matches=sorted(s.name for s in found),
        )
    raise ModelNotFoundError(
        f"No snapshot or ref of '{repo.repo_id}' matches '@{rev}'",
        available_hashes=sorted(s.name for s in snapshots),
    )
