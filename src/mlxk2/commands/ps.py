"""List the models a running `mlxk2 serve` has loaded: memory, requests, when each unloads.

Finds the server through --url, MLXK2_URL, or http://127.0.0.1:8000.
"""

from __future__ import annotations

import argparse

from mlxk2.commands._common import add_server_arguments, server_client
from mlxk2.output.sink import Output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)


def handle(args: argparse.Namespace, out: Output) -> int:
    from mlxk2.ops.ps import loaded_models
    from mlxk2.output.lifecycle import render_ps

    return out.success("ps", loaded_models(server_client(args)).to_dict(), render_ps)
