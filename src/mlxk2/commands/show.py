"""Show one model: its checks, architecture metadata, and optionally files and config."""

from __future__ import annotations

import argparse

from mlxk2.commands._common import add_model_argument
from mlxk2.output.sink import Output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("--files", action="store_true", help="List the model's files")
    parser.add_argument("--config", action="store_true", help="Include the raw config.json")


def handle(args: argparse.Namespace, out: Output) -> int:
    from mlxk2.ops.show import show_model
    from mlxk2.output.listing import render_show

    return out.success("show", show_model(args.model, files=args.files, config=args.config),
                       render_show)
