"""Delete a model from the cache (its models-- folder and its .locks entry).

name@hash deletes only that snapshot (the whole model when it is the last one).
In human mode, a name that only matched (substring, short name of another org)
asks for confirmation on a terminal and is refused elsewhere; --force skips the
question and ignores active locks. With --json a unique match is deleted directly.
Workspace folders are never deleted by rm.
"""

from __future__ import annotations

import argparse
import sys

from mlxk2.commands._common import add_model_argument
from mlxk2.errors import ValidationError
from mlxk2.output.sink import Output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, help_text="Cached model: org/name, short name, unique "
                                         "substring, or name@hash for one snapshot")
    parser.add_argument("-f", "--force", action="store_true",
                        help="Do not ask, and delete even when another process holds a lock")
    parser.add_argument("--dry-run", action="store_true",
                        help="Only show what would be deleted")


def handle(args: argparse.Namespace, out: Output) -> int:
    from mlxk2.ops.rm import execute_removal, plan_removal
    from mlxk2.output.rm import confirmation_question, render_rm

    plan = plan_removal(args.model)
    if args.dry_run:
        return out.success("rm", plan.preview(), render_rm)
    # The JSON API deletes a unique match directly, as the spec's examples do: scripts
    # cannot answer a question. People get asked, or must say --force.
    if not plan.exact and not args.force and not out.json:
        if not sys.stdin.isatty():
            raise ValidationError(
                f"'{args.model}' is not an exact name (it matched {plan.target}); "
                "repeat with the full name, or add --force", data={"model": plan.model})
        out.stderr.write(confirmation_question(plan))
        out.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            out.warn("Cancelled; nothing was deleted.")
            return 1
    result = execute_removal(plan, force=args.force)
    return out.success("rm", result.to_dict(), render_rm)
