"""Servers for the server tests: real uvicorn on 127.0.0.1 with the demo models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mlxk2.server import ModelProvider, ServerConfig, Worker
from tests.fixtures.models import CHAT, DemoCache
from tests.fixtures.server import LiveServer, free_port, start_server


@pytest.fixture(scope="session")
def make_server(demo_cache: DemoCache) -> Iterator[Callable[..., LiveServer]]:
    """Factory for extra servers with their own options; all stop at session end."""
    stoppers: list[Callable[[], None]] = []

    def make(*, preload: str | None = CHAT, loader: Any = None, memory_probe: Any = None,
             **options: Any) -> LiveServer:
        options.setdefault("keep_alive", None)
        config = ServerConfig(port=free_port(), model=preload, **options)
        worker = Worker()
        worker.start()
        provider = ModelProvider(worker, max_loaded=config.max_loaded_models,
                                 keep_alive=config.keep_alive,
                                 max_batch=config.max_concurrency,
                                 prompt_cache=config.prompt_cache, root=demo_cache.root,
                                 loader=loader, memory_probe=memory_probe)
        if preload:
            provider.preload(preload)
        live, stop = start_server(config, provider)
        stoppers.append(stop)
        return live

    yield make
    for stop in stoppers:
        stop()


@pytest.fixture(scope="session")
def live(make_server: Callable[..., LiveServer]) -> LiveServer:
    """The shared server: demo chat model preloaded, no auth, no CORS."""
    return make_server()


@pytest.fixture(scope="session")
def chat_tokenizer(demo_cache: DemoCache) -> Any:
    """The demo chat model's tokenizer, without loading weights in the test thread."""
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(demo_cache.paths[CHAT])
