"""Copy a Hub model into a workspace folder of real files (no links into the cache).

The download goes through a temporary cache beside the target, so the user's
cache is not touched; files are copied with copy-on-write where the filesystem
supports it. The target appears only when complete; an interrupted clone
resumes from the temporary cache when run again.
"""

from __future__ import annotations

import argparse

from mlxk2.commands._common import add_model_argument, exit_interrupted, progress_class
from mlxk2.output.sink import Output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, help_text="Model to clone: org/name or short name, "
                                         "optionally @revision")
    parser.add_argument("target_dir", help="Workspace folder to create (must be empty or absent)")


def handle(args: argparse.Namespace, out: Output) -> int:
    from mlxk2.ops.clone import clone
    from mlxk2.output.clone import render_clone

    try:
        result = clone(args.model, args.target_dir, tqdm_class=progress_class(out))
    except KeyboardInterrupt:
        exit_interrupted(out, "clone", "Clone interrupted: the target was not created. "
                              "Run the same clone again to resume.")
    return out.success("clone", result.to_dict(), render_clone)
