"""Check model integrity: missing or truncated files, LFS pointers, broken indexes.

A pattern checks every model whose name contains it (case-insensitive), as ``list``
filters; ``name@hash`` or a workspace path checks that one model. The exit code is 0
whatever the verdict, as the spec says, unless --strict is given.
"""

from __future__ import annotations

import argparse

from mlxk2.commands._common import add_pattern_argument
from mlxk2.output.sink import Output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_pattern_argument(parser)
    parser.add_argument("--strict", action="store_true",
                        help="Exit 1 when any checked model is unhealthy (for CI gates)")


def handle(args: argparse.Namespace, out: Output) -> int:
    from mlxk2.ops.health import health_report
    from mlxk2.output.listing import render_health

    report = health_report(args.pattern)
    code = out.success("health", report, render_health)
    return 1 if args.strict and not report.all_healthy else code
