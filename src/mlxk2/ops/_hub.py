"""What pull, clone and push share about talking to the Hub.

* :func:`translate` is the one table from huggingface_hub / httpx / OS errors to
  ``mlxk2.errors`` classes;
* :func:`parse_spec` splits ``name@rev`` and validates the name;
* :func:`run_interruptible` keeps Ctrl-C responsive during a blocking download,
  which :func:`download_snapshot` makes;
* :func:`quiet_tqdm` is the progress class used when no bars should be shown.

huggingface_hub is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mlxk2.errors import (
    AccessDeniedError,
    MlxkError,
    NetworkError,
    OperationError,
    PermissionDeniedError,
)
from mlxk2.resolve import expand_repo_id, split_revision, validate_model_name

T = TypeVar("T")
REJECTED_TOKEN = "Invalid credentials in Authorization header"  # the Hub's X-Error-Message


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``name[@rev]`` to ``(repo_id, rev)``; short names expand to ``mlx-community/``.

    Unlike cache lookups, a revision here may be any branch, tag or commit.

    Raises:
        ValidationError: empty, too long or malformed name, or an empty revision.
    """
    name, rev = split_revision(spec)
    validate_model_name(name)
    return expand_repo_id(name), rev


def hub_message(exc: BaseException) -> str:
    """The Hub's own sentence from an HTTP error, without the status preamble and help text."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.endswith("Client Error.")
              and not line.endswith("Server Error.")]
    return (useful or lines or [type(exc).__name__])[0]


def _root_cause(exc: BaseException) -> BaseException:
    """huggingface_hub wraps the real failure in LocalEntryNotFoundError when it
    falls back to the cache; the cause says what actually went wrong."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    seen = 0
    while isinstance(exc, LocalEntryNotFoundError) and exc.__cause__ is not None and seen < 5:
        exc, seen = exc.__cause__, seen + 1
    return exc


def translate(exc: BaseException, failed: type[MlxkError], repo_id: str,
              data: dict[str, Any] | None = None) -> MlxkError:
    """Map one exception from a Hub operation to the error the CLI reports.

    Args:
        exc: What huggingface_hub, httpx or the OS raised.
        failed: The command's own failure class (download_failed, clone_failed, ...),
            used for Hub answers such as "repository not found".
        repo_id: The repo, for messages.
        data: Partial command data to attach to the error.

    Returns:
        The error to raise; ``exc`` itself when it already is an MlxkError.
    """
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
    )

    if isinstance(exc, MlxkError):
        return exc
    cause = _root_cause(exc)
    access = (f"Access denied: gated/private model '{repo_id}'. "
              "Accept terms and set HF_TOKEN.")
    if isinstance(cause, GatedRepoError):
        return AccessDeniedError(access, data=data)
    if isinstance(cause, HfHubHTTPError) and cause.response is not None \
            and cause.response.headers.get("X-Error-Message") == REJECTED_TOKEN:
        return AccessDeniedError(f"The Hub rejected the token (HF_TOKEN) for '{repo_id}'",
                                 data=data)
    if isinstance(cause, HfHubHTTPError) and cause.response is not None \
            and cause.response.status_code in (401, 403) \
            and cause.response.headers.get("X-Error-Code") != "RepoNotFound":
        return AccessDeniedError(access, data=data)
    if isinstance(cause, HfHubHTTPError):
        return failed(hub_message(cause), data=data)
    if isinstance(cause, (httpx2.TransportError, OfflineModeIsEnabled, LocalEntryNotFoundError)):
        return NetworkError(f"Cannot reach the Hub for '{repo_id}': {cause}", data=data)
    if isinstance(cause, PermissionError):
        return PermissionDeniedError(f"Permission denied: {cause}", data=data)
    if isinstance(cause, OSError):
        return OperationError(f"Filesystem error: {cause}", data=data)
    return failed(f"{type(cause).__name__}: {cause}", data=data)


def run_interruptible(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking call on a helper thread and wait for it in small steps.

    huggingface_hub waits for its download pool with Ctrl-C blocked until every
    running file finishes; waiting here instead delivers KeyboardInterrupt at once.
    The caller then decides how to stop (the CLI exits without joining the pool).
    """
    values: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            values.append(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the waiting thread below
            errors.append(exc)

    worker = threading.Thread(target=target, name="mlxk2-hub", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
    if errors:
        raise errors[0]
    return values[0]


def download_snapshot(repo_id: str, revision: str | None, cache: Path, tqdm_class: type | None,
                      token: str | None) -> Path:
    """``snapshot_download`` into ``cache``, interruptible, quiet unless given a bar class."""
    from huggingface_hub import snapshot_download

    path = run_interruptible(snapshot_download, repo_id, revision=revision, cache_dir=cache,
                             tqdm_class=tqdm_class or quiet_tqdm(), token=token)
    return Path(path)


def quiet_tqdm() -> type:
    """A progress class that never draws, for JSON mode and non-terminals."""
    from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

    class QuietTqdm(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            # huggingface_hub's tqdm.__init__ carries no annotations.
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    return QuietTqdm
