"""Servers for the server tests: real uvicorn on 127.0.0.1 with the demo models.

In-process servers run uvicorn on a background thread (the MLX worker has its
own thread, as in production); end-to-end tests start ``python -m mlxk2 serve``.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mlxk2.server import ModelProvider, ServerConfig, Worker, create_app
from tests.fixtures.cli import cli_env
from tests.fixtures.models import CHAT, DemoCache


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    """A running in-process server."""

    url: str
    config: ServerConfig
    provider: ModelProvider
    app: Any

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def client(self, **kwargs: Any) -> Any:
        from openai import OpenAI

        kwargs.setdefault("api_key", self.config.api_key or "unused")
        return OpenAI(base_url=self.base_url, max_retries=0, timeout=60, **kwargs)


def start_server(config: ServerConfig,
                 provider: ModelProvider) -> tuple[LiveServer, Callable[[], None]]:
    """Start uvicorn on a thread; return the server and a function that stops it."""
    import uvicorn

    app = create_app(config, provider)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=config.port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(30)

    return LiveServer(url, config, provider, app), stop


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


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)


def raw_request(url: str, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> RawResponse:
    """One plain HTTP request, for what the openai client hides (status, headers, bytes)."""
    headers = dict(headers or {})
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    conn = _connection(url)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return RawResponse(response.status, {k.lower(): v for k, v in response.getheaders()},
                           response.read())
    finally:
        conn.close()


def sse_events(url: str, path: str, body: dict[str, Any],
               headers: dict[str, str] | None = None) -> list[str]:
    """The ``data:`` payloads of one streaming response, ``[DONE]`` included, checking
    that every event is framed as ``data: ...`` followed by a blank line."""
    conn = _connection(url)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        assert response.getheader("content-type", "").startswith("text/event-stream")
        text = response.read().decode()
    finally:
        conn.close()
    assert text.endswith("\n\n")
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        events.append(block[len("data: "):])
    return events


@pytest.fixture(scope="session")
def mid_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~130M-parameter bf16 model (about 260 MB), big enough to see in the RSS."""
    from mlxk2.engine.demo import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("mid") / "model", preset="mid")


@dataclass
class ServeProcess:
    """``python -m mlxk2 serve`` running on 127.0.0.1; its stderr goes to ``log_path``."""

    proc: subprocess.Popen[str]
    url: str
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


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
