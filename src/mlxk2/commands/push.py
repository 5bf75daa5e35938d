"""Upload a workspace folder to a Hugging Face repo (experimental).

Needs HF_TOKEN. The repo must exist unless --create is given. New and changed
files are uploaded; files on the Hub that the folder no longer has are kept,
unless --delete is given, which makes the branch mirror the folder. Nothing is
committed when nothing differs. .git, .cache, clone leftovers and the patterns
in the folder's .hfignore are never uploaded. --check-only validates the folder
locally (no network, no token); with --strict it exits 1 when the folder is unhealthy.
"""

from __future__ import annotations

import argparse

from mlxk2.commands._common import exit_interrupted, progress_class
from mlxk2.output.sink import Output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="Workspace folder to upload")
    parser.add_argument("repo_id", metavar="org/model", help="Target repository on the Hub")
    parser.add_argument("--create", action="store_true", help="Create the repo if missing")
    parser.add_argument("--delete", action="store_true",
                        help="Mirror the folder: delete files on the Hub that it does not have "
                             "(default: keep them)")
    parser.add_argument("--private", action="store_true", help="Create the repo as private")
    parser.add_argument("--branch", default="main", help="Branch to push to (default: main)")
    parser.add_argument("--commit", dest="message", default=None, metavar="MSG",
                        help="Commit message")
    parser.add_argument("--verbose", action="store_true",
                        help="List the added, modified and deleted files (human output only)")
    parser.add_argument("--check-only", action="store_true",
                        help="Only validate the workspace; no upload, no token needed")
    parser.add_argument("--strict", action="store_true",
                        help="With --check-only: exit 1 when the workspace is unhealthy")


def handle(args: argparse.Namespace, out: Output) -> int:
    from mlxk2.errors import ValidationError
    from mlxk2.ops.push import push
    from mlxk2.output.push import render_push

    if args.strict and not args.check_only:
        raise ValidationError("--strict applies only to --check-only")
    try:
        result = push(args.dir, args.repo_id, create=args.create, private=args.private,
                      branch=args.branch, message=args.message, check_only=args.check_only,
                      delete=args.delete,
                      progress=progress_class(out) is not None)
    except KeyboardInterrupt:
        exit_interrupted(out, "push", "Push interrupted: files are committed only at the end, "
                              "so the repo is unchanged. Run the same push again.")
    files = result if args.verbose else None
    code = out.success("push", result.to_dict(),
                       lambda data, sink: render_push(data, sink, files))
    unhealthy = result.workspace_health is not None and not result.workspace_health["healthy"]
    return 1 if args.strict and unhealthy else code
