"""``push`` (experimental): upload a workspace folder to a Hub repo, as a mirror.

The upload set is the folder minus ``.git``, ``.cache``, clone leftovers and
whatever ``.hfignore`` lists (gitignore-style lines; ``!`` negation is not
supported). Before uploading, the local files are compared with the branch on
the Hub (sha256 for LFS files, git blob ids otherwise), which gives the
added / modified / deleted counts; when nothing differs no commit is made.
Remote files absent from the upload set are kept unless ``delete`` asks for a
mirror, so a partial folder pushed by mistake never wipes weights on the Hub.

``check_only`` validates the folder with the same integrity rules as ``health``,
without network or token.
"""

from __future__ import annotations

import glob
import hashlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlxk2.cache.files import file_digest, sha256_file
from mlxk2.errors import AuthError, MlxkError, PushFailedError, ValidationError
from mlxk2.ops._hub import run_interruptible, translate
from mlxk2.ops.clone import CLONE_CACHE_SUFFIX, STAGING_SUFFIX
from mlxk2.resolve import validate_model_name

if TYPE_CHECKING:
    from huggingface_hub.hf_api import RepoFile

DISCLAIMER = "Experimental feature (M0: upload only). No validation/filters; review on the Hub."
IGNORE_FILE = ".hfignore"
ALWAYS_IGNORED = (".git/*", "*/.git/*", ".cache/*", "*/.cache/*", f"*{CLONE_CACHE_SUFFIX}/*",
                  f"*{STAGING_SUFFIX}/*", ".DS_Store", "*/.DS_Store", IGNORE_FILE)
EMPTY_COMMIT_LOG = ("No files have been modified since last commit. "
                    "Skipping to prevent empty commit.")


@dataclass(frozen=True)
class PushResult:
    """The outcome; file lists are for ``--verbose`` human output, JSON gets counts."""

    repo_id: str
    branch: str
    repo_url: str
    local_files_count: int
    message: str
    check_only: bool = False
    commit_sha: str | None = None
    commit_url: str | None = None
    created_repo: bool = False
    added: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    kept_remote: tuple[str, ...] = ()  # remote-only files left alone (no ``delete``)
    workspace_health: dict[str, Any] | None = None
    hf_logs: tuple[str, ...] = field(default=())

    @property
    def no_changes(self) -> bool:
        return not (self.added or self.modified or self.deleted)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "repo_id": self.repo_id, "branch": self.branch, "commit_sha": self.commit_sha,
            "commit_url": self.commit_url, "repo_url": self.repo_url,
        }
        if self.check_only:
            data.update(local_files_count=self.local_files_count, no_changes=None,
                        created_repo=False, message=self.message,
                        workspace_health=self.workspace_health)
        else:
            data.update(uploaded_files_count=len(self.added) + len(self.modified),
                        local_files_count=self.local_files_count, no_changes=self.no_changes,
                        created_repo=self.created_repo,
                        change_summary={"added": len(self.added), "modified": len(self.modified),
                                        "deleted": len(self.deleted)},
                        remote_only_kept=len(self.kept_remote), message=self.message)
            if self.hf_logs:
                data["hf_logs"] = list(self.hf_logs)
        data.update(experimental=True, disclaimer=DISCLAIMER)
        return data


def repo_url(repo_id: str) -> str:
    from huggingface_hub import constants

    return f"{constants.ENDPOINT.rstrip('/')}/{repo_id}"


def failure_data(repo_id: str, branch: str) -> dict[str, Any]:
    """The partial data the spec shows with a push error."""
    return {"repo_id": repo_id, "branch": branch, "repo_url": repo_url(repo_id),
            "uploaded_files_count": None, "local_files_count": None, "no_changes": None,
            "created_repo": False, "experimental": True, "disclaimer": DISCLAIMER}


def push(workspace: str, repo_id: str, *, create: bool = False, private: bool = False,
         branch: str = "main", message: str | None = None, check_only: bool = False,
         token: str | None = None, progress: bool = False, delete: bool = False) -> PushResult:
    """Upload ``workspace`` to ``repo_id`` on ``branch``, or only check it.

    Args:
        token: Hub token; None reads ``HF_TOKEN`` (or the stored login).
        progress: Let huggingface_hub draw its upload bars.
        delete: Mirror the folder: delete remote files it does not have.

    Raises:
        ValidationError: bad repo id or workspace folder.
        AuthError: no token, or the Hub rejected it.
        PushFailedError: missing repo without ``create``, or another Hub refusal.
        NetworkError, PermissionDeniedError, OperationError: transport or disk failures.
    """
    folder = Path(workspace).expanduser()
    try:
        validate_model_name(repo_id)
        if "/" not in repo_id:
            raise ValidationError(f"Repository must be 'org/model', got '{repo_id}'")
        if not folder.is_dir():
            raise ValidationError(f"Workspace '{workspace}' is not a folder")
    except MlxkError as exc:
        exc.data = failure_data(repo_id, branch)
        raise
    files = upload_set(folder)
    if check_only:
        return PushResult(repo_id, branch, repo_url(repo_id), len(files),
                          "Check-only: no upload performed.", check_only=True,
                          workspace_health=workspace_health(folder.resolve(), files))
    from huggingface_hub import get_token
    from huggingface_hub.utils.tqdm import disable_progress_bars

    token = token or get_token()
    if not token:
        raise AuthError("HF_TOKEN not set", data=failure_data(repo_id, branch))
    try:
        with nullcontext() if progress else disable_progress_bars():
            return run_interruptible(_upload, folder, files, repo_id, branch, create, private,
                                     message, token, delete)
    except MlxkError:
        raise
    except Exception as exc:
        raise _push_error(exc, repo_id, branch) from exc


def _push_error(exc: Exception, repo_id: str, branch: str) -> MlxkError:
    from huggingface_hub.errors import HfHubHTTPError

    data = failure_data(repo_id, branch)
    response = getattr(exc, "response", None)
    if isinstance(exc, HfHubHTTPError) and response is not None \
            and response.status_code in (401, 403) \
            and response.headers.get("X-Error-Code") != "RepoNotFound":
        return AuthError(f"The Hub refused the token for {repo_id} "
                         f"({response.status_code}): check HF_TOKEN's write access", data=data)
    return translate(exc, PushFailedError, repo_id, data)


def _upload(folder: Path, files: dict[str, Path], repo_id: str, branch: str, create: bool,
            private: bool, message: str | None, token: str, delete: bool) -> PushResult:
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    created = False
    if not api.repo_exists(repo_id):
        if not create:
            raise PushFailedError(f"Repository {repo_id} does not exist on the Hub; "
                                  "add --create to create it", data=failure_data(repo_id, branch))
        api.create_repo(repo_id, private=private, exist_ok=True)
        created = True
    if branch != "main":
        api.create_branch(repo_id, branch=branch, exist_ok=True)
    added, modified, remote_only = _compare(api, repo_id, branch, files)
    deleted, kept = (remote_only, ()) if delete else ((), remote_only)
    url = repo_url(repo_id)
    if not (added or modified or deleted):
        return PushResult(repo_id, branch, url, len(files),
                          "No files changed; skipped empty commit.", created_repo=created,
                          kept_remote=kept, hf_logs=(EMPTY_COMMIT_LOG,))
    info = api.upload_folder(
        repo_id=repo_id, folder_path=folder, revision=branch,
        commit_message=message or f"Upload {len(added) + len(modified)} file(s) with mlxk2",
        ignore_patterns=ignore_patterns(folder),
        delete_patterns=[glob.escape(p) for p in deleted] or None,
    )
    return PushResult(repo_id, branch, url, len(files), "Push successful.",
                      commit_sha=info.oid, commit_url=info.commit_url, created_repo=created,
                      added=added, modified=modified, deleted=deleted, kept_remote=kept)


def _compare(api: Any, repo_id: str, branch: str,
             files: dict[str, Path]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Added, modified and deleted paths of the upload set against the branch's tree."""
    from huggingface_hub.hf_api import RepoFile

    remote = {e.path: e for e in api.list_repo_tree(repo_id, recursive=True, revision=branch)
              if isinstance(e, RepoFile)}
    added = tuple(sorted(p for p in files if p not in remote))
    modified = tuple(sorted(p for p in files if p in remote and _differs(files[p], remote[p])))
    deleted = tuple(sorted(p for p in remote if p not in files and p != ".gitattributes"))
    return added, modified, deleted


def _differs(local: Path, remote: RepoFile) -> bool:
    size = local.stat().st_size
    if size != remote.size:
        return True
    if remote.lfs is not None:
        return sha256_file(local) != remote.lfs.sha256
    return file_digest(local, hashlib.sha1(b"blob %d\0" % size)) != remote.blob_id


def ignore_patterns(folder: Path) -> list[str]:
    """Built-in exclusions plus the folder's ``.hfignore``, as fnmatch patterns."""
    patterns = list(ALWAYS_IGNORED)
    try:
        lines = (folder / IGNORE_FILE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        anchored = line.startswith("/") or "/" in line.rstrip("/")
        body = line.strip("/")
        if line.endswith("/"):
            patterns += [f"{body}/*"] if anchored else [f"{body}/*", f"*/{body}/*"]
        elif anchored:
            patterns += [body, f"{body}/*"]
        else:
            patterns += [body, f"*/{body}", f"{body}/*", f"*/{body}/*"]
    return patterns


def upload_set(folder: Path) -> dict[str, Path]:
    """Repo path -> local file, for every file push would send."""
    from huggingface_hub.utils._paths import filter_repo_objects  # not in typed exports

    found = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
             if p.is_file()}
    kept = filter_repo_objects(found, ignore_patterns=ignore_patterns(folder))
    return {path: found[path] for path in kept}


def workspace_health(folder: Path, files: dict[str, Path]) -> dict[str, Any]:
    """The integrity report of ``health``'s rules, counted over the upload set."""
    from mlxk2.cache.integrity import workspace_report

    report = workspace_report(folder)
    report["files_count"] = len(files)
    report["total_bytes"] = sum(p.stat().st_size for p in files.values())
    return report
