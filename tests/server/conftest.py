"""Servers for the server tests: real uvicorn on 127.0.0.1 with the demo models.

In-process servers run uvicorn on a background thread (the MLX worker has its
own thread, as in production); end-to-end tests start ``python -m mlxk2 serve``.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from mlxk2.server import ModelProvider, ServerConfig, Worker, create_app
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


def start_server(config: ServerConfig, provider: ModelProvider,
                 **uvicorn_options: Any) -> tuple[LiveServer, Callable[[], None]]:
    """Start uvicorn on a thread, with ``serve``'s settings unless ``uvicorn_options``
    override them; return the server and a function that stops it."""
    import uvicorn

    from mlxk2.server.runner import uvicorn_config

    app = create_app(config, provider)
    server = uvicorn.Server(uvicorn_config(app, config, log_level="warning",
                                           **uvicorn_options))
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
             uvicorn_options: dict[str, Any] | None = None, **options: Any) -> LiveServer:
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
