"""Model lifecycle for the server: resolve, check, load once, keep the recent ones.

The provider is injected into the app (no module globals). Loading and unloading
happen on the MLX worker thread; the bookkeeping happens on the event loop, so
it needs no locks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlxk2.engine.batch import ModelBatch
from mlxk2.errors import ModelNotFoundError, ModelTooLargeError, ModelUnhealthyError
from mlxk2.server.memory import MemoryProbe, available_memory_bytes, weight_bytes
from mlxk2.server.worker import Worker

if TYPE_CHECKING:
    from mlxk2.cache.inspect import ModelInfo
    from mlxk2.cache.layout import ResolvedModel
    from mlxk2.engine.load import LoadedModel
    from mlxk2.server.embed_batcher import EmbeddingBatcher

log = logging.getLogger("mlxk2.server")

Loader = Callable[[Path], "LoadedModel"]
#: Folder, name, batch size and prompt cache to a started batch (a distributed
#: server loads on every rank at once this way).
BatchOpener = Callable[[Path, str, int, int], ModelBatch]


@dataclass(frozen=True)
class Runnable:
    """A model that passed resolution and both checks, not yet loaded."""

    name: str
    path: Path
    info: ModelInfo
    weight_bytes: int
    embedding: bool = False


@dataclass(eq=False)
class LoadedEntry:
    """A loaded model, its batch, and how busy it is."""

    name: str
    path: Path
    batch: ModelBatch
    weight_bytes: int
    active: int = 0
    last_used: float = field(default_factory=time.monotonic)
    embedder: EmbeddingBatcher | None = None

    @property
    def loaded(self) -> LoadedModel:
        return self.batch.loaded


def check_runnable(resolved: ResolvedModel) -> Runnable:
    """Apply the same checks as ``run``: integrity, runtime support, not an embedder.

    Raises:
        ModelUnhealthyError: The files are damaged or incomplete.
        ModelIncompatibleError: mlx-lm cannot generate text with this model.
    """
    from mlxk2.cache.inspect import inspect_model
    from mlxk2.cache.rules import require

    info = inspect_model(resolved)
    require(info, hint="use /v1/embeddings")
    if resolved.path is None:  # inspect reports this as unhealthy; kept for type narrowing
        raise ModelUnhealthyError(f"Model '{info.name}' has no snapshot")
    return Runnable(info.name, resolved.path, info, weight_bytes(resolved.path))


def check_embeddable(resolved: ResolvedModel) -> Runnable:
    """The same checks as ``embed``, for ``/v1/embeddings``.

    Raises:
        ModelUnhealthyError: The files are damaged or incomplete.
        ModelIncompatibleError: A chat or base model, or an encoder mlxk2 cannot run.
    """
    from mlxk2.cache.capabilities import Capability
    from mlxk2.cache.inspect import inspect_model
    from mlxk2.cache.rules import require

    info = inspect_model(resolved)
    require(info, Capability.EMBEDDINGS, hint="use /v1/chat/completions")
    if resolved.path is None:  # inspect reports this as unhealthy; kept for type narrowing
        raise ModelUnhealthyError(f"Model '{info.name}' has no snapshot")
    return Runnable(info.name, resolved.path, info, weight_bytes(resolved.path), embedding=True)


def engine_loader(cpu_dtype: str = "native", threads: int | None = None) -> Loader:
    """:func:`mlxk2.engine.load.load_model` with the server's CPU dtype policy and threads.

    ``threads`` defaults to :func:`mlxk2.engine.blas.server_threads`, which leaves a
    CPU to the event loop.
    """

    def load(path: Path) -> LoadedModel:
        from mlxk2.engine.blas import server_threads
        from mlxk2.engine.load import load_model

        return load_model(path, cpu_dtype=cpu_dtype, threads=threads or server_threads())

    return load


def _cpu_dtype(loaded: Any) -> dict[str, Any]:
    """The dtype policy's choice for ``/health`` (loaders in tests may not report one)."""
    choice = getattr(loaded, "cpu_dtype", None)
    return {} if choice is None else {"cpu_dtype": choice.to_dict()}


class ModelProvider:
    """Loads models on first use and unloads them by LRU order and idle time.

    Args:
        worker: The MLX thread that performs loads and generation.
        max_loaded: Models kept loaded at once.
        keep_alive: Idle seconds before unloading; None never unloads.
        max_batch: Sequences one model decodes together.
        prompt_cache: Finished requests' KV caches kept per model (0: none).
        root: Hub cache to resolve and list models in (default: huggingface_hub's).
        loader: Folder to loaded model (defaults to :func:`mlxk2.engine.load.load_model`).
        memory_probe: Bytes available for a new model, or None when unknown.
        open_batch: Loads a model and starts its batch, instead of ``loader``.
    """

    def __init__(
        self,
        worker: Worker,
        *,
        max_loaded: int = 1,
        keep_alive: float | None = 300.0,
        max_batch: int = 8,
        prompt_cache: int = 16,
        root: Path | None = None,
        loader: Loader | None = None,
        memory_probe: MemoryProbe | None = None,
        open_batch: BatchOpener | None = None,
    ) -> None:
        self.worker = worker
        self.max_loaded = max(1, max_loaded)
        self.keep_alive = keep_alive
        self.max_batch = max_batch
        self.prompt_cache = prompt_cache
        self.root = root
        self._load = loader or engine_loader()
        self._memory = memory_probe or available_memory_bytes
        self._open_batch = open_batch
        self._loaded: OrderedDict[Path, LoadedEntry] = OrderedDict()
        self._loading: dict[Path, asyncio.Future[LoadedEntry]] = {}
        self._workspaces: dict[str, Path] = {}
        self._capabilities: dict[str, tuple[str, ...]] = {}
        # Specs already resolved to a loaded model: requests for a loaded model skip
        # resolution and the file checks, which would otherwise add to every TTFT.
        self._aliases: dict[str, Path] = {}
        self.on_change: Callable[[int], None] = lambda count: None

    # -- queries ---------------------------------------------------------------

    def loaded_names(self) -> list[str]:
        return [entry.name for entry in self._loaded.values()]

    def runnable(self, spec: str, *, operator: bool = False, embedding: bool | None = False,
                 ) -> Runnable:
        """Resolve and check a model without loading it (blocking file I/O).

        Clients may name cache models and the workspaces the operator served
        (``--model``); any other folder path is "does not exist", so a request
        can neither load arbitrary folders nor probe which paths exist.

        ``embedding`` asks for a model ``/v1/embeddings`` can use instead of one
        that generates text; None takes the model for what it is (``--model``).

        Raises:
            ModelNotFoundError: an unknown model, or a path the operator did not serve.
        """
        from mlxk2.resolve import is_workspace_spec, resolve

        if not operator and is_workspace_spec(spec) and spec not in self._workspaces:
            raise ModelNotFoundError(f"The model '{spec}' does not exist.")
        resolved = resolve(spec, root=self.root)
        if not operator and not resolved.cached and resolved.name not in self._workspaces:
            raise ModelNotFoundError(f"The model '{spec}' does not exist.")
        if embedding is None:
            from mlxk2.cache.inspect import inspect_model

            embedding = inspect_model(resolved).model_type == "embedding"
        return check_embeddable(resolved) if embedding else check_runnable(resolved)

    def list_runnable(self) -> list[tuple[str, float, tuple[str, ...]]]:
        """``(name, last_modified, capabilities)`` of models a request may name, by
        ``list`` rules (healthy, runtime-compatible; generating or embedding), plus
        workspaces served so far."""
        from mlxk2.ops.list import list_models

        found = [(info.name, info.last_modified, info.capabilities)
                 for info in list_models(root=self.root) if info.runnable or info.embeddable]
        known = {name for name, _, _ in found}
        now = time.time()
        found.extend((name, now, self._capabilities.get(name, ()))
                     for name in self._workspaces if name not in known)
        return found

    # -- loading ---------------------------------------------------------------

    def preload(self, spec: str) -> LoadedEntry:
        """Load a model before the event loop runs (``serve --model``).

        Raises:
            MlxkError: Resolution, health, runtime, memory or load failures.
        """
        target = self.runnable(spec, operator=True, embedding=None)
        self._check_memory(target)
        entry = self.worker.call(self._build_entry, target).result()
        self._remember(target, entry)
        self._aliases[spec] = entry.path
        return entry

    async def acquire(self, spec: str, *, embedding: bool = False) -> LoadedEntry:
        """The loaded model for ``spec``, loading it once however many ask at once.

        ``embedding`` asks for an embedding model (its ``embedder`` is set). The
        caller must :meth:`release` the entry when its request ends.
        """
        while True:
            entry = await self._find_or_load(spec, embedding)
            # A model loaded for us could be unloaded (keep-alive 0, LRU) before we
            # resumed; counting ourselves in only once it is still there is race-free.
            if self._loaded.get(entry.path) is entry:
                break
        entry.active += 1
        entry.last_used = time.monotonic()
        self._loaded.move_to_end(entry.path)
        self._aliases[spec] = entry.path
        return entry

    async def _find_or_load(self, spec: str, embedding: bool) -> LoadedEntry:
        known = self._aliases.get(spec)
        entry = self._loaded.get(known) if known is not None else None
        if entry is not None and (entry.embedder is not None) == embedding:
            return entry
        target = await asyncio.to_thread(self.runnable, spec, embedding=embedding)
        entry = self._loaded.get(target.path)
        if entry is not None:
            return entry
        pending = self._loading.get(target.path)
        if pending is None:
            pending = asyncio.ensure_future(self._load_entry(target))
            self._loading[target.path] = pending
            pending.add_done_callback(lambda _: self._loading.pop(target.path, None))
        return await asyncio.shield(pending)

    def release(self, entry: LoadedEntry) -> None:
        entry.active -= 1
        entry.last_used = time.monotonic()

    async def _load_entry(self, target: Runnable) -> LoadedEntry:
        await self._evict_idle(self.max_loaded - 1)
        self._check_memory(target)
        future = self.worker.call(self._build_entry, target)
        entry = await asyncio.wrap_future(future)
        self._remember(target, entry)
        await self._evict_idle(self.max_loaded, spare=entry)
        return entry

    def _build_entry(self, target: Runnable) -> LoadedEntry:
        """Runs on the MLX thread."""
        if target.embedding:
            return self._build_embedder(target)
        if self._open_batch is not None:
            batch = self._open_batch(target.path, target.name, self.max_batch, self.prompt_cache)
        else:
            batch = ModelBatch(self._load(target.path), self.max_batch, self.prompt_cache)
        log.info("loaded %s in %.2fs", target.name, getattr(batch.loaded, "load_s", 0.0))
        return LoadedEntry(target.name, target.path, batch, target.weight_bytes)

    def _build_embedder(self, target: Runnable) -> LoadedEntry:
        """Runs on the MLX thread. The batcher stands in as the entry's batch, so
        unloading releases it like any other model."""
        from mlxk2.engine.embed import load_encoder
        from mlxk2.server.embed_batcher import EmbeddingBatcher

        encoder = load_encoder(target.path, name=target.name)
        log.info("loaded %s in %.2fs", target.name, encoder.load_s)
        embedder = EmbeddingBatcher(encoder, self.worker.call)
        return LoadedEntry(target.name, target.path, embedder,  # type: ignore[arg-type]
                           target.weight_bytes, embedder=embedder)

    def _remember(self, target: Runnable, entry: LoadedEntry) -> None:
        self._loaded[target.path] = entry
        if not target.info.cached:
            self._workspaces[target.name] = target.path
            self._capabilities[target.name] = target.info.capabilities
        self.on_change(len(self._loaded))

    def _check_memory(self, target: Runnable) -> None:
        available = self._memory()
        if available is not None and target.weight_bytes > available:
            raise ModelTooLargeError(
                f"Model '{target.name}' needs about {target.weight_bytes} bytes of memory; "
                f"{available} are available",
            )

    # -- unloading -------------------------------------------------------------

    async def _evict_idle(self, keep: int, spare: LoadedEntry | None = None) -> None:
        """Unload idle models, least recently used first, until at most ``keep`` remain.

        Busy models (and ``spare``, a model just loaded for a waiting request) are
        never dropped, so the limit may be exceeded until they finish.
        """
        while len(self._loaded) > keep:
            idle = [e for e in self._loaded.values() if e.active == 0 and e is not spare]
            if not idle:
                return
            await self.unload(idle[0])

    async def unload(self, entry: LoadedEntry) -> None:
        """Drop a model and give its memory back."""
        if self._loaded.get(entry.path) is not entry:
            return
        del self._loaded[entry.path]
        self._aliases = {k: p for k, p in self._aliases.items() if p != entry.path}
        await asyncio.wrap_future(self.worker.release(entry.batch))
        log.info("unloaded %s", entry.name)
        self.on_change(len(self._loaded))

    async def reap_idle(self, now: float | None = None) -> list[str]:
        """Unload models idle for longer than ``keep_alive``, and idle models over the
        LRU limit that were kept while busy; return the names of expired models."""
        await self._evict_idle(self.max_loaded)
        if self.keep_alive is None:
            return []
        now = time.monotonic() if now is None else now
        expired = [e for e in self._loaded.values()
                   if e.active == 0 and now - e.last_used >= self.keep_alive]
        for entry in expired:
            await self.unload(entry)
        return [e.name for e in expired]

    async def close(self) -> None:
        for entry in list(self._loaded.values()):
            await self.unload(entry)

    def describe(self) -> list[dict[str, Any]]:
        """Loaded models for ``/health``."""
        now = time.monotonic()
        return [
            {"name": e.name, "active_requests": e.active,
             "idle_seconds": round(now - e.last_used, 3) if e.active == 0 else 0.0,
             **_cpu_dtype(e.loaded)}
            for e in self._loaded.values()
        ]
