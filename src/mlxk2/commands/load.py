"""Have a running `mlxk2 serve` load a model now, so the first request does not wait.

--keep-alive sets how long it stays loaded when idle (30s, 5m, 1h, never);
without it the server's --keep-alive applies.
"""

from __future__ import annotations

import argparse

from mlxk2.commands._common import add_model_argument, add_server_arguments, server_client
from mlxk2.output.sink import Output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, help_text="Model name as a request would give it")
    parser.add_argument("--keep-alive", default=None,
                        help="Unload after this long idle: 30s, 5m, 1h, never, 0")
    add_server_arguments(parser)


def handle(args: argparse.Namespace, out: Output) -> int:
    from mlxk2.ops.load import load_model
    from mlxk2.output.lifecycle import render_load

    result = load_model(server_client(args), args.model, args.keep_alive)
    return out.success("load", result.to_dict(), render_load)
