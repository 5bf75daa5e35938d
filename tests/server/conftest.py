"""Servers for the server tests: real uvicorn on 127.0.0.1 with the demo models."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlxk2.server import ModelProvider, ServerConfig, Worker
from tests.fixtures.cli import cli_env
from tests.fixtures.models import CHAT, DemoCache
from tests.fixtures.server import LiveServer, ServeProcess, free_port, raw_request, start_server


@pytest.fixture(scope="session")
def make_server(demo_cache: DemoCache) -> Iterator[Callable[..., LiveServer]]:
    """Factory for extra servers with their own options; all stop at session end."""
    stoppers: list[Callable[[], None]] = []

    def make(*, preload: str | None = CHAT, loader: Any = None, memory_probe: Any = None,
             root: Any = None, uvicorn_options: dict[str, Any] | None = None,
             **options: Any) -> LiveServer:
        options.setdefault("keep_alive", None)
        config = ServerConfig(port=free_port(), model=preload, **options)
        worker = Worker()
        worker.start()
        provider = ModelProvider(worker, max_loaded=config.max_loaded_models,
                                 keep_alive=config.keep_alive,
                                 max_batch=config.max_concurrency,
                                 prompt_cache=config.prompt_cache, root=root or demo_cache.root,
                                 loader=loader, memory_probe=memory_probe)
        if preload:
            provider.preload(preload)
        live, stop = start_server(config, provider, **(uvicorn_options or {}))
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
def live_with_encoder(make_server: Callable[..., LiveServer], demo_cache: DemoCache,
                      tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    """A server whose cache holds the demo chat model and the real MiniLM encoder."""
    from mlxk2.cache.layout import store_snapshot
    from tests.fixtures.embedding import MINILM, minilm_folder

    root = tmp_path_factory.mktemp("chat_and_encoder_hub")
    store_snapshot(root, MINILM, minilm_folder())
    store_snapshot(root, CHAT, demo_cache.paths[CHAT])
    return make_server(root=root, max_loaded_models=2)


@pytest.fixture(scope="session")
def chat_tokenizer(demo_cache: DemoCache) -> Any:
    """The demo chat model's tokenizer, without loading weights in the test thread."""
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(demo_cache.paths[CHAT])


@pytest.fixture(scope="session")
def mid_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~130M-parameter bf16 model (about 260 MB), big enough to see in the RSS."""
    from mlxk2.engine.demo import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("mid") / "model", preset="mid")


@pytest.fixture(scope="module")
def serve_process(demo_cache: DemoCache, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Callable[..., ServeProcess]]:
    """Start ``mlxk2 serve ARGS`` processes for this module; all stop at its end.

    A full stderr pipe would block the server, hence the log file.
    """
    started: list[tuple[ServeProcess, Any]] = []

    def start(*args: str, **env: str) -> ServeProcess:
        port = free_port()
        log_path = tmp_path_factory.mktemp("serve-log") / "stderr.txt"
        log_file = log_path.open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlxk2", "serve", "--port", str(port), *args],
            env=cli_env(demo_cache.hf_home, **env), stdout=subprocess.DEVNULL,
            stderr=log_file, text=True,
        )
        server = ServeProcess(proc, f"http://127.0.0.1:{port}", log_path)
        started.append((server, log_file))
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if raw_request(server.url, "GET", "/health").status == 200:
                    return server
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)

    yield start
    for server, log_file in started:
        server.stop()
        log_file.close()
