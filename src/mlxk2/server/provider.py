"""Model lifecycle for the server: resolve, check, load once, keep the recent ones.

The provider is injected into the app (no module globals). Loading and unloading
happen on the MLX worker thread; the bookkeeping happens on the event loop, so
it needs no locks.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlxk2.engine.batch import ModelBatch
from mlxk2.errors import ModelNotFoundError, ModelTooLargeError
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
    """A loaded model, its batch, and how busy it is.

    ``active`` counts leases (requests that acquired the model), ``running`` the
    generating ones among them that hold a batch slot; the rest wait for one.
    ``keep_alive`` is the idle time before unloading (``math.inf``: never), the
    server default until a request or a load sets another.
    """

    name: str
    path: Path
    batch: ModelBatch
    info: ModelInfo
    weight_bytes: int
    memory_bytes: int = 0
    active: int = 0
    running: int = 0
    keep_alive: float = math.inf
    last_used: float = field(default_factory=time.monotonic)
    embedder: EmbeddingBatcher | None = None

    @property
    def loaded(self) -> LoadedModel:
        return self.batch.loaded


def check_usable(resolved: ResolvedModel, embedding: bool | None = False) -> Runnable:
    """Apply the same checks as ``run``, or for ``embedding`` as ``embed``.

    ``embedding`` None takes the model for what it is (``--model``).

    Raises:
        ModelUnhealthyError: The files are damaged or incomplete.
        ModelIncompatibleError: The model cannot serve what was asked of it.
    """
    from mlxk2.cache.capabilities import Capability
    from mlxk2.cache.inspect import require_usable

    capability = None
    if embedding is not None:
        capability = Capability.EMBEDDINGS if embedding else Capability.TEXT_GENERATION
    hint = "use /v1/chat/completions" if embedding else "use /v1/embeddings"
    info, path = require_usable(resolved, capability, hint)
    serves = capability or info.purpose
    return Runnable(info.name, path, info, weight_bytes(path),
                    embedding=serves is Capability.EMBEDDINGS)


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
        self._default_keep_alive = math.inf if keep_alive is None else keep_alive
        self.max_batch = max_batch
        self.prompt_cache = prompt_cache
        self.root = root
        self._load = loader or engine_loader()
        self._memory = memory_probe or available_memory_bytes
        self._open_batch = open_batch
        self._loaded: OrderedDict[Path, LoadedEntry] = OrderedDict()
        self._loading: dict[Path, asyncio.Future[LoadedEntry]] = {}
        self._workspaces: dict[str, Path] = {}
        # Specs already resolved to a loaded model: requests for a loaded model skip
        # resolution and the file checks, which would otherwise add to every TTFT.
        self._aliases: dict[str, Path] = {}
        self.on_change: Callable[[int], None] = lambda count: None
        self._unloads: set[asyncio.Task[None]] = set()

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
        return check_usable(resolved, embedding)

    def catalog(self) -> list[ModelInfo]:
        """Models a request may name, by ``list`` rules (healthy, runtime-compatible;
        generating or embedding), plus the workspaces served so far."""
        from mlxk2.cache.inspect import inspect_model
        from mlxk2.ops.list import list_models
        from mlxk2.resolve import resolve

        found = [info for info in list_models(root=self.root)
                 if info.runnable or info.embeddable]
        known = {info.name for info in found}
        found.extend(inspect_model(resolve(name, root=self.root))
                     for name in list(self._workspaces) if name not in known)
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

    async def acquire(self, spec: str, *, embedding: bool = False,
                      keep_alive: float | None = None) -> LoadedEntry:
        """The loaded model for ``spec``, loading it once however many ask at once.

        The caller must :meth:`release` the entry when its request ends.

        Args:
            spec: A model name a client may use (see :meth:`runnable`).
            embedding: Ask for an embedding model (its ``embedder`` is set).
            keep_alive: Idle seconds before this model unloads from now on
                (``math.inf``: never, 0: as soon as it is idle); None keeps its setting.
        """
        while True:
            entry = await self._find_or_load(spec, embedding)
            # A model loaded for us could be unloaded (keep-alive 0, LRU) before we
            # resumed; counting ourselves in only once it is still there is race-free.
            if self._loaded.get(entry.path) is entry:
                break
        entry.active += 1
        entry.last_used = time.monotonic()
        if keep_alive is not None:
            entry.keep_alive = keep_alive
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
        """End a lease; a model whose keep-alive is 0 unloads once its last lease ends."""
        entry.active -= 1
        entry.last_used = time.monotonic()
        if entry.active == 0 and entry.keep_alive == 0:
            self._unload_when_idle(entry)

    def _unload_when_idle(self, entry: LoadedEntry) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (start-up): the reaper unloads it later

        async def unload_if_still_idle() -> None:
            if entry.active == 0:
                await self.unload(entry)

        task = loop.create_task(unload_if_still_idle())
        self._unloads.add(task)
        task.add_done_callback(self._unloads.discard)

    async def _load_entry(self, target: Runnable) -> LoadedEntry:
        await self._evict_idle(self.max_loaded - 1)
        self._check_memory(target)
        future = self.worker.call(self._build_entry, target)
        entry = await asyncio.wrap_future(future)
        self._remember(target, entry)
        await self._evict_idle(self.max_loaded, spare=entry)
        return entry

    def _build_entry(self, target: Runnable) -> LoadedEntry:
        """Runs on the MLX thread, where nothing else allocates during the load, so the
        growth of MLX's active memory is this model's; the weights' size when MLX
        reports none (a loader that is not MLX's)."""
        import mlx.core as mx

        before = mx.get_active_memory()
        entry = self._build_embedder(target) if target.embedding else self._build_generator(target)
        grown = mx.get_active_memory() - before
        entry.memory_bytes = grown if grown > 0 else target.weight_bytes
        return entry

    def _build_generator(self, target: Runnable) -> LoadedEntry:
        """Runs on the MLX thread."""
        if self._open_batch is not None:
            batch = self._open_batch(target.path, target.name, self.max_batch, self.prompt_cache)
        else:
            batch = ModelBatch(self._load(target.path), self.max_batch, self.prompt_cache)
        log.info("loaded %s in %.2fs", target.name, getattr(batch.loaded, "load_s", 0.0))
        return LoadedEntry(target.name, target.path, batch, target.info, target.weight_bytes)

    def _build_embedder(self, target: Runnable) -> LoadedEntry:
        """Runs on the MLX thread. The batcher stands in as the entry's batch, so
        unloading releases it like any other model."""
        from mlxk2.engine.embed import load_encoder
        from mlxk2.server.embed_batcher import EmbeddingBatcher

        encoder = load_encoder(target.path, name=target.name)
        log.info("loaded %s in %.2fs", target.name, encoder.load_s)
        embedder = EmbeddingBatcher(encoder, self.worker.call)
        return LoadedEntry(target.name, target.path, embedder,  # type: ignore[arg-type]
                           target.info, target.weight_bytes, embedder=embedder)

    def _remember(self, target: Runnable, entry: LoadedEntry) -> None:
        entry.keep_alive = self._default_keep_alive
        self._loaded[target.path] = entry
        if not target.info.cached:
            self._workspaces[target.name] = target.path
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
        """Unload models idle for longer than their keep-alive, and idle models over the
        LRU limit that were kept while busy; return the names of expired models."""
        await self._evict_idle(self.max_loaded)
        now = time.monotonic() if now is None else now
        expired = [e for e in self._loaded.values()
                   if e.active == 0 and now - e.last_used >= e.keep_alive]
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

    # -- lifecycle views and steering ------------------------------------------

    def loaded_entries(self) -> list[LoadedEntry]:
        """Loaded models, least recently used first."""
        return list(self._loaded.values())

    def request_counts(self, entry: LoadedEntry) -> tuple[int, int]:
        """``(active, queued)`` requests of a model: generating ones wait for a batch
        slot; an embedding request is active from its lease."""
        running = entry.active if entry.embedder is not None else entry.running
        return running, entry.active - running

    def seconds_to_unload(self, entry: LoadedEntry, now: float | None = None) -> float | None:
        """Seconds until an idle model unloads; None while busy or when kept for ever."""
        if entry.active > 0 or math.isinf(entry.keep_alive):
            return None
        now = time.monotonic() if now is None else now
        return max(0.0, entry.keep_alive - (now - entry.last_used))

    async def find_loaded(self, spec: str) -> LoadedEntry | None:
        """The loaded model ``spec`` names, or None when it is not loaded.

        Raises:
            ModelNotFoundError: ``spec`` names nothing a client may use.
        """
        for entry in self._loaded.values():
            if entry.name == spec:
                return entry
        known = self._aliases.get(spec)
        if known is not None and known in self._loaded:
            return self._loaded[known]
        target = await asyncio.to_thread(self.runnable, spec, embedding=None)
        return self._loaded.get(target.path)

    async def unload_named(self, spec: str) -> LoadedEntry | None:
        """Unload a model now, or, while requests use it, as soon as they end.

        Returns:
            The entry (still loaded when busy), or None when it was not loaded.

        Raises:
            ModelNotFoundError: ``spec`` names nothing a client may use.
        """
        entry = await self.find_loaded(spec)
        if entry is None:
            return None
        entry.keep_alive = 0.0
        if entry.active == 0:
            await self.unload(entry)
        return entry
