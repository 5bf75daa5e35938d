"""MLX's distributed engine for ``run`` and ``serve``: which parallelism, the group, shared bytes.

Ranks are started by ``mlx.launch`` (or anything that sets the same
environment). Rank 0 decides; the other ranks receive each decision as bytes
through ``all_sum`` (rank 0 adds the payload, the others add zeros), the way
``mlx_lm.server`` shares its requests, and then run the identical step.

What the launch itself says (rank, size, backend) is read without MLX by
:mod:`mlxk2.engine.launch`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import pickle
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlxk2.engine.batch import GenerationRequest, ModelBatch, Sink
from mlxk2.errors import MlxkError, ModelIncompatibleError, RankLostError, ValidationError

if TYPE_CHECKING:
    from mlxk2.engine.events import Event
    from mlxk2.engine.launch import LaunchInfo
    from mlxk2.engine.load import LoadedModel

log = logging.getLogger("mlxk2.distributed")

Parallelism = Literal["tensor", "pipeline"]
#: ``--parallel`` choices; ``auto`` picks tensor parallelism when the model can
#: shard its heads over the ranks, else pipeline parallelism.
PARALLEL_CHOICES = ("auto", "tensor", "pipeline")


def supported_parallelism(config: dict[str, Any], world_size: int) -> list[Parallelism]:
    """The kinds of parallelism mlx-lm's class for ``config`` offers at ``world_size``.

    Decided from the model class alone, so no weights are read: tensor
    parallelism needs ``Model.shard`` and head counts divisible by the ranks;
    pipeline parallelism needs an inner model built on mlx-lm's ``PipelineMixin``
    and at least one layer per rank.
    """
    from mlx_lm.models.pipeline import PipelineMixin
    from mlx_lm.utils import _get_classes

    try:
        model_class, _ = _get_classes(config)
    except ValueError as exc:
        raise ModelIncompatibleError(str(exc)) from exc
    module = sys.modules[model_class.__module__]
    found: list[Parallelism] = []
    text = config.get("text_config") or config
    heads = [text.get("num_attention_heads"), text.get("num_key_value_heads")]
    if hasattr(model_class, "shard") and all(
        isinstance(h, int) and h % world_size == 0 for h in heads if h is not None
    ):
        found.append("tensor")
    pipelined = any(isinstance(v, type) and issubclass(v, PipelineMixin) and v is not PipelineMixin
                    for v in vars(module).values())
    layers = text.get("num_hidden_layers")
    if pipelined and (not isinstance(layers, int) or layers >= world_size):
        found.append("pipeline")
    return found


def choose_parallelism(config: dict[str, Any], requested: str, world_size: int,
                       name: str) -> Parallelism:
    """The parallelism to load ``name`` with, checked before any weights are read.

    Raises:
        ValidationError: ``requested`` is not one of :data:`PARALLEL_CHOICES`.
        ModelIncompatibleError: the model supports neither kind, or not the requested one.
    """
    if requested not in PARALLEL_CHOICES:
        raise ValidationError(f"--parallel must be one of {', '.join(PARALLEL_CHOICES)}")
    found = supported_parallelism(config, world_size)
    model_type = config.get("model_type", "?")
    if not found:
        raise ModelIncompatibleError(
            f"Model '{name}' ({model_type}) cannot be split over {world_size} ranks: mlx-lm "
            "offers neither tensor parallelism (model.shard, heads divisible by the ranks) "
            "nor pipeline parallelism (model.model.pipeline) for it", model=name)
    if requested == "auto":
        return found[0]
    if requested not in found:
        raise ModelIncompatibleError(
            f"Model '{name}' ({model_type}) does not support {requested} parallelism over "
            f"{world_size} ranks; it supports: {', '.join(found)}", model=name)
    return requested


def read_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a model folder."""
    config: dict[str, Any] = json.loads((path / "config.json").read_text("utf-8"))
    return config


class Group:
    """The distributed group, the collectives rank 0 decides through, and their timing.

    Every collective runs inside :meth:`collective`, which records since when
    this rank waits; a :class:`Watchdog` turns a wait longer than the timeout
    into a fault, because a collective over a lost link never returns.

    Args:
        group: An ``mx.distributed.Group`` (default: the global one, initialised
            strictly, so a process outside a launch fails instead of running alone).
    """

    def __init__(self, group: Any = None) -> None:
        import mlx.core as mx

        self._group = group if group is not None else mx.distributed.init(strict=True)
        self.rank: int = self._group.rank()
        self.size: int = self._group.size()
        self.waiting_since: float | None = None
        self.broken: RankLostError | None = None
        self.on_fault: Callable[[RankLostError], None] = lambda error: None
        self._fault_lock = threading.Lock()

    @property
    def native(self) -> Any:
        return self._group

    @contextlib.contextmanager
    def collective(self, patient: bool = False) -> Iterator[None]:
        """Run a collective; a peer's lost connection becomes :class:`RankLostError`.

        ``patient`` waits are not timed (a peer still loading its weights).
        """
        if self.broken is not None:
            raise self.broken
        self.waiting_since = None if patient else time.monotonic()
        try:
            yield
        except RuntimeError as exc:  # the ring backend's "connection to a peer was lost"
            raise self.fail(f"a rank stopped answering: {exc}") from exc
        finally:
            self.waiting_since = None

    def fail(self, why: str) -> RankLostError:
        """Mark the group broken (once) and tell :attr:`on_fault`."""
        with self._fault_lock:
            first = self.broken is None
            if first:
                self.broken = RankLostError(f"Distributed rank {self.rank}: {why}")
        assert self.broken is not None
        if first:
            self.on_fault(self.broken)
        return self.broken

    def stalled_for(self) -> float:
        """Seconds the current timed collective has been waiting (0 when none is)."""
        since = self.waiting_since
        return 0.0 if since is None else time.monotonic() - since

    def share(self, payload: bytes | None, patient: bool = False) -> bytes:
        """Rank 0's ``payload`` on every rank (the others pass None).

        The length goes first, so the receivers can size their zeros.
        """
        import mlx.core as mx

        stream = _generation_stream()
        size = len(payload) if payload is not None and self.rank == 0 else 0
        with self.collective(patient):
            total = mx.distributed.all_sum(mx.array(size, dtype=mx.int64), group=self._group,
                                           stream=stream)
            length = int(total.item())  # type: ignore[arg-type]  # an int64 scalar
            if length == 0:
                return b""
            if self.rank == 0 and payload is not None:
                data = mx.array(memoryview(payload), dtype=mx.uint8)  # type: ignore[arg-type]
            else:
                data = mx.zeros(length, dtype=mx.uint8)
            shared = mx.distributed.all_sum(data, group=self._group, stream=stream)
            mx.eval(shared)
        return bytes(memoryview(shared))  # type: ignore[arg-type]  # arrays are buffers

    def count(self, flag: bool) -> int:
        """How many ranks pass True (e.g. how many failed a load); waits patiently."""
        import mlx.core as mx

        with self.collective(patient=True):
            total = mx.distributed.all_sum(mx.array(int(flag), dtype=mx.int32),
                                           group=self._group, stream=_generation_stream())
            return int(total.item())  # type: ignore[arg-type]  # an int32 scalar


def _generation_stream() -> Any:
    """mlx-lm's generation stream: collectives queued on it run after the step in flight.

    The batch generator evaluates each step asynchronously; a collective on
    another stream could overtake it on one rank and not on another, and the
    ranks would then pair up different messages.
    """
    from mlx_lm.generate import generation_stream

    return generation_stream


class Watchdog:
    """Calls :meth:`Group.fail` when a timed collective waits longer than ``timeout``.

    Collectives block in C++ and cannot be interrupted, so the thread that
    waits cannot notice on its own that a peer is gone.
    """

    def __init__(self, group: Group, timeout: float, interval: float = 0.25) -> None:
        self.group = group
        self.timeout = timeout
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="mlxk2-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(self._interval):
            stalled = self.group.stalled_for()
            if stalled > self.timeout:
                self.group.fail(f"no answer from the other ranks for {stalled:.0f}s")
                return


def sharder(group: Group, parallelism: Parallelism) -> Callable[[Any], None]:
    """A function that splits a freshly built (lazy) mlx-lm model over ``group``."""

    def shard(model: Any) -> None:
        if parallelism == "tensor":
            model.shard(group.native)
        else:
            model.model.pipeline(group.native)

    return shard


def rank_layout(leader: Leader, launch: LaunchInfo | None) -> dict[str, Any]:
    """The group as ``/health`` and ``run --verbose`` report it: size, backend, split, ranks."""
    group = leader.group
    return {
        "world_size": group.size,
        "rank": group.rank,
        "backend": launch.backend if launch else None,
        "parallel": leader.parallelism or leader.parallel,
        "ranks": [{"rank": r, "addresses": list(a)} for r, a in
                  enumerate(launch.hosts if launch else ())],
        "healthy": group.broken is None,
    }


class Leader:
    """Rank 0's side: every decision that changes a batch is shared before it is applied.

    Only one thread may use a leader (the MLX thread): the ranks must see the
    decisions in one order.

    Args:
        group: The group; this process must be its rank 0.
        parallel: ``--parallel``: ``auto``, ``tensor`` or ``pipeline``.
    """

    def __init__(self, group: Group, parallel: str = "auto") -> None:
        if group.rank != 0:
            raise ValueError("only rank 0 leads")
        if parallel not in PARALLEL_CHOICES:
            raise ValidationError(f"--parallel must be one of {', '.join(PARALLEL_CHOICES)}")
        self.group = group
        self.parallel = parallel
        self.parallelism: Parallelism | None = None
        self._ids = itertools.count()

    def send(self, op: Op) -> None:
        self.group.share(pickle.dumps(op))

    def heartbeat(self) -> None:
        self.send(Heartbeat())

    def stop(self) -> None:
        """Release the other ranks; a broken group has nobody left to tell."""
        if self.group.broken is None:
            self.send(Stop())

    def open(self, path: Path, name: str, max_batch: int, prompt_cache: int) -> ReplicatedBatch:
        """Load ``path`` on every rank, split by the chosen parallelism.

        Raises:
            ModelIncompatibleError: the model can be split neither way (before any
                rank reads a weight), or a rank could not load it.
            RankLostError: a rank stopped answering.
        """
        parallelism = choose_parallelism(read_config(path), self.parallel, self.group.size, name)
        batch_id = next(self._ids)
        self.send(Open(batch_id, str(path), name, parallelism, max_batch, prompt_cache))
        loaded, error = _load_share(self.group, path, name, parallelism)
        failed = self.group.count(loaded is None)
        if loaded is None or failed:
            raise error or ModelIncompatibleError(
                f"{failed} of {self.group.size} ranks could not load '{name}'; every host "
                "needs the same model in its cache (or at the same path)", model=name)
        self.parallelism = parallelism
        return ReplicatedBatch(self, batch_id, loaded, max_batch, prompt_cache)


def _load_share(group: Group, path: Path, name: str,
                parallelism: Parallelism) -> tuple[LoadedModel | None, MlxkError | None]:
    """This rank's part of the model, or the error that kept it from loading."""
    from mlxk2.engine.load import load_model

    try:
        return load_model(path, name, shard=sharder(group, parallelism)), None
    except MlxkError as exc:
        return None, exc


class ReplicatedBatch(ModelBatch):
    """A :class:`ModelBatch` on rank 0 whose every change is first shared with the ranks.

    The other ranks apply the same calls in the same order to their own batch
    (:func:`follow`), so their generators hand out the same uids and run the
    same steps. A request sampled at a temperature without a seed gets one
    here, so every rank draws the same tokens.
    """

    def __init__(self, leader: Leader, batch_id: int, loaded: LoadedModel, max_batch: int,
                 prompt_cache: int) -> None:
        super().__init__(loaded, max_batch, prompt_cache)
        self._leader = leader
        self.batch_id = batch_id
        self._shared = True

    def add(self, request: GenerationRequest, sink: Sink) -> int:
        request = with_shared_seed(request)
        self._leader.send(Add(self.batch_id, request))
        return super().add(request, sink)

    def cancel(self, uid: int) -> None:
        self._leader.send(Cancel(self.batch_id, uid))
        super().cancel(uid)

    def step(self) -> None:
        self._leader.send(Step(self.batch_id))
        with self._leader.group.collective():
            super().step()

    def abort_all(self, error: BaseException) -> None:
        if self._shared and self._leader.group.broken is None:
            self._leader.send(AbortAll(self.batch_id))
        super().abort_all(error)

    def close(self) -> None:
        if self._leader.group.broken is None:
            self._leader.send(Close(self.batch_id))
        self._shared = False
        super().close()


def with_shared_seed(request: GenerationRequest) -> GenerationRequest:
    """``request`` with a fresh seed when it samples at random without one.

    Unseeded sampling draws from MLX's global random state, which differs
    between processes; a seed gives the request a random stream of its own.
    """
    sampling = request.sampling
    if sampling.seed is not None or sampling.temperature <= 0:
        return request
    return dataclasses.replace(
        request, sampling=dataclasses.replace(sampling, seed=secrets.randbits(63)))


def _ignore(event: Event) -> None:
    """Where a follower's events go: only rank 0 answers."""


def follow(group: Group) -> None:
    """Apply rank 0's decisions until it sends :class:`Stop` (ranks other than 0).

    Raises:
        RankLostError: rank 0 (or another rank) stopped answering.
    """
    batches: dict[int, ModelBatch] = {}
    first = True  # rank 0 may take its time (imports, checks) before it first speaks
    while True:
        op: Op = pickle.loads(group.share(None, patient=first))
        first = False
        if isinstance(op, Stop):
            for batch in batches.values():
                batch.close()
            return
        if isinstance(op, Open):
            loaded, error = _load_share(group, _local_path(op.path, op.name), op.name,
                                        op.parallelism)
            if error is not None:
                log.error("cannot load %s on rank %d: %s", op.name, group.rank, error.message)
            if group.count(loaded is None) == 0 and loaded is not None:
                batches[op.batch_id] = ModelBatch(loaded, op.max_batch, op.prompt_cache)
            continue
        found = batches.get(getattr(op, "batch_id", -1))
        if found is None:
            continue
        batch = found
        if isinstance(op, Add):
            try:
                batch.add(op.request, _ignore)
            except Exception:  # rank 0 fails the same way and reports it to the client
                log.debug("request refused on rank %d as on rank 0", group.rank, exc_info=True)
        elif isinstance(op, Cancel):
            batch.cancel(op.uid)
        elif isinstance(op, Step):
            with group.collective():
                batch.step()
        elif isinstance(op, AbortAll):
            batch.abort_all(RuntimeError("aborted by rank 0"))
        elif isinstance(op, Close):
            del batches[op.batch_id]
            batch.close()


def _local_path(path: str, name: str) -> Path:
    """Rank 0's folder when this host has it too, else ``name`` in this host's cache."""
    if Path(path).is_dir():
        return Path(path)
    from mlxk2.resolve import resolve

    resolved = resolve(name)
    return resolved.path if resolved.path is not None else Path(path)


# -- the shared decisions ------------------------------------------------------------


@dataclass(frozen=True)
class Open:
    """Load a model on every rank and start its batch."""

    batch_id: int
    path: str
    name: str
    parallelism: Parallelism
    max_batch: int
    prompt_cache: int


@dataclass(frozen=True)
class Add:
    batch_id: int
    request: GenerationRequest


@dataclass(frozen=True)
class Cancel:
    batch_id: int
    uid: int


@dataclass(frozen=True)
class Step:
    batch_id: int


@dataclass(frozen=True)
class AbortAll:
    batch_id: int


@dataclass(frozen=True)
class Close:
    batch_id: int


@dataclass(frozen=True)
class Heartbeat:
    """Sent by an idle rank 0, so a lost link shows up as a stalled collective."""


@dataclass(frozen=True)
class Stop:
    """Rank 0 is done: the other ranks leave :func:`follow`."""


Op = Open | Add | Cancel | Step | AbortAll | Close | Heartbeat | Stop
