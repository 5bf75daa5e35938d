"""Show the CLI version, the JSON API spec version and system memory."""

from __future__ import annotations

import argparse

from mlxk2.output.sink import Output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--version`` is a top-level flag; there is no subcommand to configure."""


def handle(args: argparse.Namespace | None, out: Output) -> int:
    from mlxk2.ops.version import version_info
    from mlxk2.output.version import render_version

    return out.success("version", version_info(), render_version)
