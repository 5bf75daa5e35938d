"""One output sink per invocation: data to stdout, diagnostics to stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol, TextIO, TypeVar, runtime_checkable

from mlxk2.errors import MlxkError
from mlxk2.output.envelope import dumps, error_envelope, success_envelope
from mlxk2.output.format import color_enabled, terminal_width


@runtime_checkable
class Result(Protocol):
    """A typed op result; ``to_dict`` is its envelope ``data``."""

    def to_dict(self) -> dict[str, Any]: ...


Data = TypeVar("Data", bound="dict[str, Any] | Result | None")
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

    def success(self, command: str, data: Data,
                render: Callable[[Data, Output], str] | None = None) -> int:
        """Print a result: the envelope in JSON mode, else the renderer's text.

        A typed result goes to the renderer as it is; its ``to_dict`` is the envelope.
        """
        if self.json:
            payload = data.to_dict() if isinstance(data, Result) else data
            self.write(dumps(success_envelope(command, payload)))
        elif render is not None:
            text = render(data, self)
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
