"""Arguments shared by several commands, declared once."""

from __future__ import annotations

import argparse


def add_model_argument(parser: argparse.ArgumentParser, *, required: bool = True,
                       help_text: str | None = None) -> None:
    """The model spec: ``org/name``, a short name, a substring, ``name@hash`` or a path."""
    parser.add_argument(
        "model", nargs=None if required else "?",
        help=help_text or "Model: org/name, short name, unique substring, name@hash, "
                          "or a workspace path (./dir)",
    )


def add_pattern_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default=None,
                        help="Case-insensitive substring of the model name")
