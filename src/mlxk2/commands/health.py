"""Check model integrity: missing or truncated files, LFS pointers, broken indexes.

With a pattern naming one model (exact, short name, name@hash, unique substring
or workspace path) only that model is checked.
"""

from __future__ import annotations

import argparse

from mlxk2.commands._common import add_pattern_argument
from mlxk2.output.sink import Output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_pattern_argument(parser)


def handle(args: argparse.Namespace, out: Output) -> int:
    from mlxk2.ops.health import health_report
    from mlxk2.output.listing import render_health

    return out.success("health", health_report(args.pattern), render_health)
