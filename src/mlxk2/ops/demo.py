"""``demo``: build the offline demo model into the cache or a workspace folder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlxk2.cache.files import folder_bytes
from mlxk2.cache.layout import cache_root, store_snapshot
from mlxk2.errors import FilesystemError, ValidationError
from mlxk2.resolve import is_workspace_spec

DEMO_ORG = "mlxk2"


def demo_repo_id(*, preset: str = "tiny", quantize_bits: int | None = None,
                 chat_template: bool = True) -> str:
    """The fixed cache name for a demo variant, e.g. ``mlxk2/demo-chat-4bit``."""
    name = "demo-chat" if chat_template else "demo-base"
    if preset != "tiny":
        name += f"-{preset}"
    if quantize_bits:
        name += f"-{quantize_bits}bit"
    return f"{DEMO_ORG}/{name}"


@dataclass(frozen=True)
class DemoResult:
    """Where the demo model went: a cache name with its commit, or a workspace path."""

    name: str
    path: Path
    cached: bool
    commit: str | None
    preset: str
    quantize_bits: int | None
    chat_template: bool
    size_bytes: int

    def to_dict(self) -> dict[str, object]:
        """The ``demo --json`` data (no filesystem path for cache installs)."""
        return {
            "model": self.name,
            "hash": self.commit,
            "cached": self.cached,
            "preset": self.preset,
            "quantize_bits": self.quantize_bits,
            "chat_template": self.chat_template,
            "size_bytes": self.size_bytes,
        }


def install_demo(
    *,
    path: str | Path | None = None,
    preset: str = "tiny",
    quantize_bits: int | None = None,
    chat_template: bool = True,
    seed: int = 0,
    root: Path | None = None,
    builder: Callable[..., Path] | None = None,
) -> DemoResult:
    """Build the demo model into ``path`` (a workspace) or into the cache.

    Args:
        path: A new or empty workspace folder; None installs into the cache
            under :func:`demo_repo_id`. The result names it as typed (``./``
            added to a bare relative name), so ``run`` accepts that name.
        preset, quantize_bits, chat_template, seed: Passed to the builder.
        root: Cache root (default: huggingface_hub's).
        builder: The model builder (default: :func:`mlxk2.engine.demo.build_demo_model`).

    Raises:
        ValidationError: an unknown preset or bit width, or a non-empty ``path``.
        FilesystemError: the files cannot be written.
    """
    if builder is None:
        from mlxk2.engine.demo import build_demo_model

        builder = build_demo_model
    options: dict[str, object] = {"preset": preset, "quantize_bits": quantize_bits,
               "chat_template": chat_template, "seed": seed}
    try:
        if path is not None:
            name = workspace_name(path)
            folder = Path(path).expanduser()
            if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
                raise ValidationError(f"'{name}' exists and is not an empty folder")
            _build(builder, folder, options)
            return DemoResult(name, folder, False, None, preset, quantize_bits,
                              chat_template, folder_bytes(folder))
        repo_id = demo_repo_id(preset=preset, quantize_bits=quantize_bits,
                               chat_template=chat_template)
        root = cache_root() if root is None else root
        with tempfile.TemporaryDirectory(prefix="mlxk2-demo-") as tmp:
            _build(builder, Path(tmp), options)
            snapshot = store_snapshot(root, repo_id, Path(tmp))
        return DemoResult(repo_id, snapshot, True, snapshot.name, preset, quantize_bits,
                          chat_template, folder_bytes(snapshot))
    except OSError as exc:
        raise FilesystemError(f"Cannot write the demo model: {exc}") from exc


def workspace_name(path: str | Path) -> str:
    """The folder as the user typed it, made a workspace spec: ``dm`` becomes ``./dm``."""
    text = os.fspath(path)
    return text if is_workspace_spec(text) else f"./{text}"


def _build(builder: Callable[..., Path], dest: Path, options: dict[str, object]) -> None:
    try:
        builder(dest, **options)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


DEMO_EMBEDDING = f"{DEMO_ORG}/demo-embed"


def install_demo_embedding(*, seed: int = 0, root: Path | None = None,
                           builder: Callable[..., Path] | None = None) -> DemoResult:
    """Build the demo embedding model into the cache as :data:`DEMO_EMBEDDING`.

    Raises:
        FilesystemError: the files cannot be written.
    """
    if builder is None:
        from mlxk2.engine.demo import build_demo_embedding_model

        builder = build_demo_embedding_model
    root = cache_root() if root is None else root
    try:
        with tempfile.TemporaryDirectory(prefix="mlxk2-demo-") as tmp:
            _build(builder, Path(tmp), {"seed": seed})
            snapshot = store_snapshot(root, DEMO_EMBEDDING, Path(tmp))
    except OSError as exc:
        raise FilesystemError(f"Cannot write the demo model: {exc}") from exc
    return DemoResult(DEMO_EMBEDDING, snapshot, True, snapshot.name, "embedding", None, False,
                      folder_bytes(snapshot))
