"""Slow or idle connections cannot pile up: header and keep-alive deadlines, a connection bound."""

from __future__ import annotations

import http.client
import socket
import time

import pytest

from mlxk2.server.config import ServerConfig
from mlxk2.server.runner import HEADER_TIMEOUT, KEEP_ALIVE_TIMEOUT, connection_limit
from tests.fixtures.server import LiveServer, raw_request

HEADER_S = 1.0
KEEP_ALIVE_S = 1
#: ``connection_limit`` of a server with these admission limits.
SMALL = {"max_concurrency": 2, "max_queue": 1}


@pytest.fixture(scope="module")
def strict(make_server) -> LiveServer:
    return make_server(preload=None, **SMALL, uvicorn_options={
        "header_timeout": HEADER_S, "keep_alive_timeout": KEEP_ALIVE_S})


def _connect(live: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.config.port), timeout=10)
    sock.settimeout(10)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_serve_sets_its_deadlines_deliberately():
    assert HEADER_TIMEOUT == 10.0
    assert KEEP_ALIVE_TIMEOUT == 5
    assert connection_limit(ServerConfig()) == 144  # 8 decoding + 64 queued, twice over


def test_connections_that_never_finish_their_headers_are_closed(strict):
    started = time.monotonic()
    slow = [_connect(strict) for _ in range(20)]
    for sock in slow:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    for _ in range(3):  # a header line now and then does not extend the deadline
        time.sleep(HEADER_S / 4)
        for sock in slow:
            sock.sendall(b"X-Slow: 1\r\n")
    assert raw_request(strict.url, "GET", "/health").status == 200
    assert all(_closed_by_server(sock) for sock in slow)
    assert time.monotonic() - started < HEADER_S + 5
    for sock in slow:
        sock.close()


def test_an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not(strict):
    conn = http.client.HTTPConnection("127.0.0.1", strict.config.port, timeout=10)
    for turn in range(3):  # one connection serves several requests, each within the deadline
        if turn:
            time.sleep(KEEP_ALIVE_S / 4)
        conn.request("GET", "/health")
        assert conn.getresponse().read() and conn.sock is not None
        answered = time.monotonic()
    assert _closed_by_server(conn.sock)
    assert KEEP_ALIVE_S - 0.2 <= time.monotonic() - answered < KEEP_ALIVE_S + 5
    conn.close()


def test_connections_beyond_the_bound_are_refused_at_once(strict):
    limit = connection_limit(ServerConfig(**SMALL))
    held = [_connect(strict) for _ in range(limit)]
    time.sleep(0.2)  # let the server accept them all
    extra = _connect(strict)
    extra.settimeout(HEADER_S / 2)  # refused well before any header deadline
    assert _closed_by_server(extra)
    for sock in [*held, extra]:
        sock.close()
    time.sleep(0.2)
    assert raw_request(strict.url, "GET", "/health").status == 200
