"""List cached models with size, age, type and health.

JSON output always carries every matching model with both checks; the human
table shows runnable models unless --all (or --health, for the reasons) is given.
"""

from __future__ import annotations

import argparse

from mlxk2.commands._common import add_pattern_argument
from mlxk2.output.sink import Output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_pattern_argument(parser)
    parser.add_argument("--all", action="store_true",
                        help="Show every model, not only runnable ones")
    parser.add_argument("--health", action="store_true",
                        help="Show every model with the reason for any problem")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="Show full hashes, framework and capabilities")


def handle(args: argparse.Namespace, out: Output) -> int:
    from mlxk2.ops.list import list_result
    from mlxk2.output.listing import render_list

    return out.success("list", list_result(args.pattern), lambda result, o: render_list(
        result, o, show_all=args.all, reasons=args.health, verbose=args.verbose))
