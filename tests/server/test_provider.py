"""Model lifecycle: shared loads, LRU eviction, keep-alive and the memory check."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlxk2.engine.load import load_model
from mlxk2.errors import (
    ModelIncompatibleError,
    ModelNotFoundError,
    ModelTooLargeError,
    ModelUnhealthyError,
)
from mlxk2.server import ModelProvider, Worker
from tests.fixtures.cache_content import bert_embedding_files
from tests.fixtures.models import BASE, CHAT, CHAT_4BIT


class CountingLoader:
    """The real loader, counting calls and optionally holding them until released."""

    def __init__(self) -> None:
        self.calls: list[Path] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, path: Path) -> Any:
        self.calls.append(path)
        self.gate.wait(30)
        return load_model(path)


@pytest.fixture
def worker() -> Iterator[Worker]:
    worker = Worker()
    worker.start()
    yield worker
    worker.stop()


def _provider(worker: Worker, root: Path, **kwargs: Any) -> ModelProvider:
    return ModelProvider(worker, root=root, **kwargs)


def test_concurrent_first_requests_share_one_load(worker, demo_cache):
    loader = CountingLoader()
    provider = _provider(worker, demo_cache.root, loader=loader)

    async def scenario() -> list[Any]:
        loader.gate.clear()
        tasks = [asyncio.create_task(provider.acquire(CHAT)) for _ in range(4)]
        await asyncio.sleep(0.3)
        loader.gate.set()
        return await asyncio.gather(*tasks)

    entries = asyncio.run(scenario())
    assert len(loader.calls) == 1
    assert all(e is entries[0] for e in entries)
    assert entries[0].active == 4


def test_least_recently_used_model_is_evicted(worker, demo_cache):
    loader = CountingLoader()
    provider = _provider(worker, demo_cache.root, loader=loader, max_loaded=2)

    async def use(spec: str) -> None:
        provider.release(await provider.acquire(spec))

    async def scenario() -> None:
        await use(CHAT)
        await use(BASE)
        await use(CHAT)  # BASE is now the least recently used
        await use(CHAT_4BIT)

    asyncio.run(scenario())
    assert sorted(provider.loaded_names()) == sorted([CHAT, CHAT_4BIT])
    assert len(loader.calls) == 3


def test_busy_model_is_not_evicted_until_idle(worker, demo_cache):
    provider = _provider(worker, demo_cache.root, max_loaded=1)

    async def scenario() -> tuple[list[str], list[str]]:
        busy = await provider.acquire(CHAT)
        other = await provider.acquire(BASE)
        during = sorted(provider.loaded_names())
        provider.release(busy)
        provider.release(other)
        await provider.reap_idle()
        return during, provider.loaded_names()

    during, after = asyncio.run(scenario())
    assert during == sorted([CHAT, BASE])
    assert after == [BASE]


def test_keep_alive_unloads_idle_models(worker, demo_cache):
    provider = _provider(worker, demo_cache.root, keep_alive=60.0)

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        entry = await provider.acquire(CHAT)
        provider.release(entry)
        early = await provider.reap_idle(now=entry.last_used + 10)
        late = await provider.reap_idle(now=entry.last_used + 61)
        return early, late, provider.loaded_names()

    early, late, remaining = asyncio.run(scenario())
    assert early == []
    assert late == [CHAT]
    assert remaining == []


def test_a_model_keep_alive_overrides_the_default_until_changed(worker, demo_cache):
    provider = _provider(worker, demo_cache.root, keep_alive=60.0, max_loaded=2)

    async def scenario() -> tuple[list[str], float | None, float | None, list[str]]:
        kept = await provider.acquire(CHAT, keep_alive=math.inf)
        provider.release(kept)
        brief = await provider.acquire(BASE, keep_alive=5.0)
        provider.release(brief)
        again = await provider.acquire(BASE)  # no keep_alive: the model keeps its 5 s
        provider.release(again)
        reaped = await provider.reap_idle(now=brief.last_used + 6)
        return (reaped, provider.seconds_to_unload(kept),
                provider.seconds_to_unload(brief, now=brief.last_used + 2),
                provider.loaded_names())

    reaped, kept_left, brief_left, remaining = asyncio.run(scenario())
    assert reaped == [BASE]
    assert kept_left is None
    assert brief_left == pytest.approx(3.0)
    assert remaining == [CHAT]


def test_keep_alive_zero_unloads_when_the_last_lease_ends(worker, demo_cache):
    provider = _provider(worker, demo_cache.root, keep_alive=None)

    async def scenario() -> tuple[list[str], list[str]]:
        first = await provider.acquire(CHAT, keep_alive=0.0)
        second = await provider.acquire(CHAT)
        provider.release(first)
        await asyncio.sleep(0.1)
        while_busy = provider.loaded_names()
        provider.release(second)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if not provider.loaded_names():
                break
        return while_busy, provider.loaded_names()

    while_busy, after = asyncio.run(scenario())
    assert while_busy == [CHAT]
    assert after == []


def test_model_larger_than_memory_is_refused_before_loading(worker, demo_cache):
    loader = CountingLoader()
    provider = _provider(worker, demo_cache.root, loader=loader, memory_probe=lambda: 1000)
    with pytest.raises(ModelTooLargeError):
        asyncio.run(provider.acquire(CHAT))
    with pytest.raises(ModelTooLargeError):
        provider.preload(CHAT)
    assert loader.calls == []


def test_unknown_damaged_and_embedding_models_are_refused(worker, demo_cache, tmp_path):
    provider = _provider(worker, demo_cache.root)
    with pytest.raises(ModelNotFoundError):
        provider.preload("nobody/nothing")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text('{"model_type": "llama"}')
    (damaged / "model.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(ModelUnhealthyError):
        provider.runnable(str(damaged), operator=True)
    embedder = tmp_path / "embedder"
    embedder.mkdir()
    for name, content in bert_embedding_files().items():
        (embedder / name).write_bytes(content)
    with pytest.raises(ModelIncompatibleError):
        provider.runnable(str(embedder), operator=True)


def test_clients_cannot_load_or_probe_folders_the_operator_did_not_serve(
        worker, demo_cache, tmp_path):
    provider = _provider(worker, demo_cache.root)
    served = tmp_path / "served"
    for name, content in bert_embedding_files().items():
        served.mkdir(exist_ok=True)
        (served / name).write_bytes(content)
    messages = set()
    for spec in (str(served), "/etc", "/no/such/folder", "./served"):
        with pytest.raises(ModelNotFoundError) as info:
            provider.runnable(spec)
        messages.add(info.value.message.replace(spec, "<spec>"))
    assert messages == {"The model '<spec>' does not exist."}


def test_acquire_returns_a_loaded_model_while_keep_alive_zero_reaps(worker, demo_cache):
    provider = _provider(worker, demo_cache.root, keep_alive=0.0)

    async def scenario() -> tuple[bool, int]:
        stop = asyncio.Event()

        async def reap() -> None:  # as often as the app's reaper does for keep-alive 0
            while not stop.is_set():
                await provider.reap_idle()
                await asyncio.sleep(0.05)

        reaper = asyncio.create_task(reap())
        entry = await provider.acquire(CHAT)
        stop.set()
        await reaper
        still_loaded = CHAT in provider.loaded_names()
        provider.release(entry)
        return still_loaded, entry.active

    still_loaded, active = asyncio.run(scenario())
    assert still_loaded
    assert active == 0
