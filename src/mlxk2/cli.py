"""Argument parsing and dispatch: nothing else happens here.

Each command lives in ``mlxk2.commands.<name>`` with ``add_arguments`` and
``handle``; those modules import their heavy dependencies lazily, so building
the parser stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

from mlxk2.errors import InternalError, InterruptedByUserError, MlxkError, ValidationError
from mlxk2.output.sink import Output

# name -> (module, one-line help; None hides the command from the main listing)
COMMANDS: dict[str, tuple[str, str | None]] = {
    "list": ("mlxk2.commands.list", "List cached models"),
    "show": ("mlxk2.commands.show", "Show details of one model"),
    "health": ("mlxk2.commands.health", "Check model integrity"),
    "pull": ("mlxk2.commands.pull", "Download a model from the Hugging Face Hub"),
    "rm": ("mlxk2.commands.rm", "Delete a model from the cache"),
    "clone": ("mlxk2.commands.clone", "Copy a Hub model into a workspace folder"),
    "push": ("mlxk2.commands.push", "Upload a workspace folder to the Hub (experimental)"),
    "run": ("mlxk2.commands.run", "Generate text, or chat interactively"),
    "serve": ("mlxk2.commands.serve", "Start an OpenAI-compatible API server"),
    "ps": ("mlxk2.commands.ps", "List the models a running server has loaded"),
    "load": ("mlxk2.commands.load", "Have a running server load a model"),
    "unload": ("mlxk2.commands.unload", "Have a running server unload a model"),
    "embed": ("mlxk2.commands.embed", "Turn texts into embedding vectors"),
    "demo": ("mlxk2.commands.demo", "Build a small offline demo model"),
    "convert": ("mlxk2.commands.convert", None),
    "import": ("mlxk2.commands.import_", "Import a GGUF model into an MLX workspace folder"),
}
ALIASES = {"server": "serve", "stop": "unload"}
# The JSON envelope's command name, where it differs from the CLI's.
ENVELOPE_NAMES = {"serve": "server"}


class _UsageError(Exception):
    """Raised instead of argparse's print-and-exit, so JSON mode can report it."""


class _Parser(argparse.ArgumentParser):
    """Raises usage errors naming the (sub)command that refused them, with a help hint."""

    #: Each command's parser by every name it answers to, so unknown flags are
    #: reported by the command they were given to rather than by ``mlxk2``.
    command_parsers: dict[str, _Parser]

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: None = None) -> argparse.Namespace:
        parsed, extra = self.parse_known_args(args)
        if extra:
            command = getattr(parsed, "command", None)
            owner = self.command_parsers.get(command, self) if command else self
            owner.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def _available_commands() -> dict[str, str]:
    return {name: module for name, (module, _) in COMMANDS.items()
            if importlib.util.find_spec(module) is not None}


def build_parser() -> _Parser:
    parser = _Parser(
        prog="mlxk2",
        description="Manage and run Hugging Face models with Apple MLX.",
        epilog="Add --json to any command for machine-readable output (spec 0.1.7). "
               "Run 'mlxk2 <command> --help' for details.",
    )
    parser.add_argument("--version", action="store_true", help="Show version and exit")
    parser.add_argument("--json", action="store_true", help="Print one JSON document")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>",
                                       parser_class=_Parser)
    parser.command_parsers = {}
    for name, module_name in _available_commands().items():
        help_text = COMMANDS[name][1]
        aliases = [a for a, target in ALIASES.items() if target == name]
        kwargs: dict[str, Any] = {"help": help_text} if help_text else {}
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, aliases=aliases, description=module.__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter,
                                    **kwargs)
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="Print one JSON document (spec 0.1.7)")
        module.add_arguments(sub)
        sub.set_defaults(_module=module_name)
        sub.command_parsers = {}
        parser.command_parsers.update(dict.fromkeys([name, *aliases], sub))
    return parser


def _guess_command(argv: Sequence[str]) -> str:
    """The envelope's command for an invocation argparse rejected."""
    for token in argv:
        if not token.startswith("-"):
            name = ALIASES.get(token, token)
            return ENVELOPE_NAMES.get(name, name) if name in COMMANDS else "version"
    return "version"


def _handle(module_name: str, args: argparse.Namespace | None, out: Output) -> int:
    """Import a command module and run it; every command's ``handle`` returns its exit code."""
    code: int = importlib.import_module(module_name).handle(args, out)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = Output(json_mode="--json" in argv)
    command = _guess_command(argv)
    try:
        if "--version" in argv and set(argv) <= {"--version", "--json"}:
            # Fast path: scripts call --version often; skip building every subparser.
            return _handle("mlxk2.commands.version", None, out)
        args = build_parser().parse_args(argv)
        if args.version:
            command = "version"
            return _handle("mlxk2.commands.version", args, out)
        if args.command is None:
            if out.json:
                raise ValidationError("No command given; see 'mlxk2 --help'")
            build_parser().print_help(sys.stderr)
            return 1
        name = ALIASES.get(args.command, args.command)
        command = ENVELOPE_NAMES.get(name, name)
        return _handle(args._module, args, out)
    except _UsageError as exc:
        return out.failure(command, ValidationError(str(exc)))
    except MlxkError as exc:
        return out.failure(command, exc)
    except KeyboardInterrupt:
        return out.failure(command, InterruptedByUserError("Interrupted"))
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except Exception as exc:  # the last line of defence: never a raw traceback
        if os.environ.get("MLXK2_DEBUG") == "1":
            import traceback

            traceback.print_exc()
        return out.failure(command, InternalError(f"{type(exc).__name__}: {exc}"))


def _silence_stdout() -> None:
    """After the reader went away (``| head``), stop Python's exit-time flush error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
