"""One output sink per invocation: data to stdout, diagnostics to stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from mlxk2.errors import MlxkError
from mlxk2.output.envelope import dumps, error_envelope, success_envelope
from mlxk2.output.format import color_enabled, terminal_width

Renderer = Callable[[dict[str, Any], "Output"], str]


class Output:
    """Chosen once from ``--json``; commands hand it data, never format envelopes."""

    def __init__(self, json_mode: bool, stdout: TextIO | None = None,
                 stderr: TextIO | None = None) -> None:
        self.json = json_mode
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.color = (not json_mode) and color_enabled(self.stdout)
        #: Columns human tables must fit in; None when nothing limits them (a pipe).
        self.width = None if json_mode else terminal_width(self.stdout)

    def success(self, command: str, data: dict[str, Any] | None,
                render: Renderer | None = None) -> int:
        """Print a result: the envelope in JSON mode, else the renderer's text."""
        if self.json:
            self.write(dumps(success_envelope(command, data)))
        elif render is not None:
            text = render(data or {}, self)
            if text:
                self.write(text)
        return 0

    def failure(self, command: str, err: MlxkError) -> int:
        """Report an error: the envelope on stdout in JSON mode, one stderr line otherwise."""
        if self.json:
            self.write(dumps(error_envelope(command, err)))
        else:
            self.warn(f"Error: {err.message}")
            hint = err.details.get("matches") or err.details.get("available_hashes")
            if hint:
                self.warn("  " + "\n  ".join(hint))
        return err.exit_code

    def write(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def warn(self, text: str) -> None:
        """Diagnostics never touch stdout, so JSON stays parseable."""
        self.stderr.write(text + "\n")
        self.stderr.flush()
