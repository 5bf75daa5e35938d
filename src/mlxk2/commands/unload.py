"""Have a running `mlxk2 serve` unload a model and free its memory.

A model that is answering requests unloads as soon as they end.
"""

from __future__ import annotations

import argparse

from mlxk2.commands._common import add_model_argument, add_server_arguments, server_client
from mlxk2.output.sink import Output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, help_text="Model name as `mlxk2 ps` shows it")
    add_server_arguments(parser)


def handle(args: argparse.Namespace, out: Output) -> int:
    from mlxk2.ops.unload import unload_model
    from mlxk2.output.lifecycle import render_unload

    result = unload_model(server_client(args), args.model)
    return out.success("unload", result.to_dict(), render_unload)
