"""Arguments shared by several commands, declared once."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from mlxk2.errors import InterruptedByUserError
from mlxk2.output.sink import Output

if TYPE_CHECKING:
    from mlxk2.ops._server import ServerClient

API_KEY_ENV = "MLXK2_API_KEY"
SERVER_URL_ENV = "MLXK2_URL"


def add_model_argument(parser: argparse.ArgumentParser, *, required: bool = True,
                       help_text: str | None = None) -> None:
    """The model spec: ``org/name``, a short name, a substring, ``name@hash`` or a path."""
    parser.add_argument(
        "model", nargs=None if required else "?",
        help=help_text or "Model: org/name, short name, unique substring, name@hash, "
                          "or a workspace path (./dir)",
    )


def add_pattern_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default=None,
                        help="Case-insensitive substring of the model name")


def progress_class(out: Output) -> type | None:
    """Bars (bytes and files) for a person watching a terminal; none for scripts or --json."""
    if out.json or not out.stdout.isatty():
        return None
    from huggingface_hub.utils.tqdm import tqdm

    return tqdm


def exit_interrupted(out: Output, command: str, message: str) -> NoReturn:
    """Report Ctrl-C (an envelope in JSON mode) and stop now.

    Waiting for huggingface_hub's download threads would finish the running
    files first; partial files stay marked incomplete for the next run.
    """
    code = out.failure(command, InterruptedByUserError(message))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cpu-dtype`` and ``--threads``, for the commands that run models (run, serve)."""
    from mlxk2.engine.dtype import AUTO, CPU_DTYPE_POLICIES

    group = parser.add_argument_group("CPU inference")
    group.add_argument(
        "--cpu-dtype", choices=CPU_DTYPE_POLICIES, default=AUTO,
        help="auto: on a CPU with OpenBLAS, dequantise a quantised model to float32 when "
             "the float32 copy fits a quarter of RAM, else keep it as stored; native: as "
             "stored; float32: always float32 (default: auto)")
    group.add_argument(
        "--threads", type=_positive_int, default=None,
        help="OpenBLAS threads (default: the CPUs this process may use; for serve, one "
             "fewer, left to the event loop)")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the running server is, for the commands that steer one."""
    parser.add_argument("--url", default=None,
                        help=f"The server's base URL (or set {SERVER_URL_ENV}; "
                             "default: http://127.0.0.1:8000)")
    parser.add_argument("--api-key", default=None,
                        help=f"The server's API key (or set {API_KEY_ENV})")


def server_client(args: argparse.Namespace) -> ServerClient:
    """A client for the server named by ``--url``, ``MLXK2_URL`` or the default port."""
    from mlxk2.ops._server import DEFAULT_URL, ServerClient

    url = args.url or os.environ.get(SERVER_URL_ENV) or DEFAULT_URL
    return ServerClient(url, args.api_key or os.environ.get(API_KEY_ENV) or None)
