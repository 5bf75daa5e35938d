"""Running the app under uvicorn with a graceful, exit-0 shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

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
    from fastapi import FastAPI

    from mlxk2.server.config import ServerConfig

#: Seconds uvicorn waits for open connections once running requests were aborted.
GRACEFUL_TIMEOUT = 10

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

    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_config=None,
        access_log=config.log_level.lower() == "debug",
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT,
        lifespan="on",
    )
    _Server(uv_config).run(sockets=[sock])
