"""Download a model from the Hugging Face Hub into the cache.

Short names mean mlx-community/<name>; append @revision for a branch, tag or
commit. A cached model that fails the integrity check is repaired: its missing
or broken files are fetched again. Progress bars appear only on a terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from mlxk2.commands._common import add_model_argument
from mlxk2.output.sink import Output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, help_text="Model to download: org/name or short name, "
                                         "optionally @revision")


def handle(args: argparse.Namespace, out: Output) -> int:
    from mlxk2.ops.pull import pull
    from mlxk2.output.pull import render_pull

    try:
        result = pull(args.model, tqdm_class=progress_class(out))
    except KeyboardInterrupt:
        exit_interrupted(out, "Download interrupted: the model stays marked incomplete. "
                              "Run the same pull again to finish it.")
    return out.success("pull", result.to_dict(), render_pull)


def progress_class(out: Output) -> type | None:
    """Bars (bytes and files) for a person watching a terminal; none for scripts or --json."""
    if out.json or not out.stdout.isatty():
        return None
    from huggingface_hub.utils import tqdm

    return tqdm


def exit_interrupted(out: Output, message: str) -> NoReturn:
    """Stop now on Ctrl-C: waiting for huggingface_hub's download threads would
    finish the running files first. Partial files stay marked incomplete."""
    out.warn(message)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
