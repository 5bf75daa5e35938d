"""Running the app under uvicorn with a graceful, exit-0 shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import socket
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from mlxk2.errors import OperationError, PermissionDeniedError

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from mlxk2.server.config import ServerConfig

#: Seconds uvicorn waits for open connections once running requests were aborted.
GRACEFUL_TIMEOUT = 10
#: Seconds a client has to send a request's headers, counted from connecting or from
#: the end of the previous response. uvicorn has no such deadline: a connection
#: that sends its headers a byte at a time (slowloris) would stay open for ever.
HEADER_TIMEOUT = 10.0
#: Seconds an idle keep-alive connection stays open between requests (uvicorn's default).
KEEP_ALIVE_TIMEOUT = 5

log = logging.getLogger("mlxk2.server")

#: How long a thread may hold the GIL while another waits for it. The MLX thread
#: gives up the GIL during every evaluation and must win it back from the event
#: loop to build the next step; at Python's default of 5 ms that wait showed as a
#: slower decode step under many streams (about 5% of aggregate tokens/s).
GIL_SWITCH_INTERVAL = 0.001


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, as_json: bool) -> None:
    """Route our logs and uvicorn's to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if as_json else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front, so a busy or forbidden port is a CLI error.

    Raises:
        PermissionDeniedError: the port needs privileges.
        OperationError: the port is in use, or the host cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = exc.strerror or type(exc).__name__
        if isinstance(exc, PermissionError):
            raise PermissionDeniedError(f"Cannot listen on {host}:{port}: {why}") from exc
        raise OperationError(f"Cannot listen on {host}:{port}: {why}") from exc
    return sock


def connection_limit(config: ServerConfig) -> int:
    """Connections served at once: room for every generating and queued request twice
    over (streams, health checks, clients that reconnect). Beyond it a new
    connection is closed at once and a request is answered 503."""
    return max(64, 2 * (config.max_concurrency + config.max_queue))


def guarded_h11_protocol(header_timeout: float, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a deadline for each request's headers and a bound
    on open connections."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("refusing a connection: %d are open already", max_connections)
                transport.close()
                return
            self._arm_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_deadline()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # the request's headers are in
                self._disarm_header_deadline()

        def on_response_complete(self) -> None:
            self._arm_header_deadline()  # for the next request on this connection
            super().on_response_complete()

        def _arm_header_deadline(self) -> None:
            self._disarm_header_deadline()
            self._header_deadline = self.loop.call_later(header_timeout, self._headers_late)

        def _disarm_header_deadline(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_late(self) -> None:
            self._header_deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


def uvicorn_config(app: FastAPI, config: ServerConfig, *,
                   header_timeout: float = HEADER_TIMEOUT,
                   keep_alive_timeout: int = KEEP_ALIVE_TIMEOUT,
                   **options: Any) -> uvicorn.Config:
    """uvicorn's settings for ``app``: timeouts and the connection bound set deliberately.

    Args:
        app: The app from :func:`mlxk2.server.app.create_app`.
        config: Host, port and the admission limits the connection bound follows.
        header_timeout: Seconds to send a request's headers.
        keep_alive_timeout: Idle seconds before a keep-alive connection is closed.
        options: Further ``uvicorn.Config`` arguments (logging).
    """
    import uvicorn

    limit = connection_limit(config)
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        http=guarded_h11_protocol(header_timeout, limit),
        timeout_keep_alive=keep_alive_timeout,
        limit_concurrency=limit,
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT,
        lifespan="on",
        **options,
    )


def run_app(app: FastAPI, config: ServerConfig, sock: socket.socket) -> None:
    """Serve until a signal arrives; return normally so the process can exit 0.

    On SIGINT or SIGTERM the app drains: new requests get 503 while running ones
    have ``config.shutdown_grace`` seconds to finish. Then, or at a second signal,
    streams still running end with an error event and ``[DONE]``, and uvicorn
    closes the connections. A third SIGINT forces the exit.
    """
    import uvicorn

    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    state = app.state.mlxk
    grace = config.shutdown_grace

    class _Server(uvicorn.Server):
        drain_until: float | None = None
        announced = False

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Not recorded in _captured_signals: uvicorn would re-raise it and
            # the process would die by the signal instead of exiting 0.
            if not state.draining and grace != 0:
                state.begin_drain()
                self.drain_until = time.monotonic() + (grace if grace is not None else math.inf)
                return
            state.begin_shutdown()
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

        async def on_tick(self, counter: int) -> bool:
            if self.drain_until is not None and not self.should_exit:
                # Every request uvicorn is still serving counts, streams included.
                in_flight = len(self.server_state.tasks)
                if in_flight and time.monotonic() >= self.drain_until:
                    log.warning("shutdown grace over: aborting %d request(s)", in_flight)
                elif in_flight and not self.announced:
                    self.announced = True  # logged here, not in the signal handler
                    log.info("draining: %d request(s) in flight may take %s to finish; "
                             "a second signal aborts them", in_flight,
                             "as long as they need" if grace is None else f"{grace:g}s")
                if not in_flight or time.monotonic() >= self.drain_until:
                    state.begin_shutdown()
                    self.should_exit = True
            return await super().on_tick(counter)

    uv_config = uvicorn_config(app, config, log_config=None,
                               access_log=config.log_level.lower() == "debug")
    _Server(uv_config).run(sockets=[sock])
