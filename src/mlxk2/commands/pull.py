"""Download a model from the Hugging Face Hub into the cache.

Short names mean mlx-community/<name>; append @revision for a branch, tag or
commit. A cached model that fails the integrity check is repaired: its missing
or broken files are fetched again. Progress bars appear only on a terminal.
"""

from __future__ import annotations

import argparse

from mlxk2.commands._common import add_model_argument, exit_interrupted, progress_class
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
        exit_interrupted(out, "pull", "Download interrupted: the model stays marked incomplete. "
                              "Run the same pull again to finish it.")
    return out.success("pull", result.to_dict(), render_pull)
