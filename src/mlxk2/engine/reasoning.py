"""Separate a model's reasoning from its answer in a text stream.

Two conventions are recognised:

* ``<think>…</think>`` (Qwen3, DeepSeek-R1 and others), including templates
  that already open ``<think>`` at the end of the prompt;
* gpt-oss "harmony" channels: ``<|channel|>analysis<|message|>…<|end|>`` is
  reasoning, ``<|start|>assistant<|channel|>final<|message|>…`` is the answer.

Text with none of these markers passes through unchanged.
"""

from __future__ import annotations

REASONING = "reasoning"
CONTENT = "content"

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
CHANNEL = "<|channel|>"
MESSAGE = "<|message|>"
END = "<|end|>"
START = "<|start|>"
#: Harmony end markers that carry no text of their own.
_DROPPED = ("<|return|>", "<|call|>")
MARKERS = (THINK_OPEN, THINK_CLOSE, CHANNEL, MESSAGE, END, START, *_DROPPED)

# Parser states besides REASONING and CONTENT.
_CHANNEL_HEADER = "channel-header"
_ROLE_HEADER = "role-header"


class ReasoningParser:
    """Split streamed text into ``("reasoning" | "content", text)`` pieces.

    A piece of text that could be the start of a marker is held back until the
    next :meth:`feed` or :meth:`flush` decides it.
    """

    def __init__(self, *, start_in_reasoning: bool = False) -> None:
        """Args:
        start_in_reasoning: The prompt ended with an open ``<think>``, so the
            model's first words are reasoning.
        """
        self._state = REASONING if start_in_reasoning else CONTENT
        self._buf = ""
        self._header = ""
        self._trim = start_in_reasoning
        self._longest = max(len(m) for m in MARKERS)

    def feed(self, text: str) -> list[tuple[str, str]]:
        """Add streamed text; return the pieces that are now decided."""
        self._buf += text
        pieces: list[tuple[str, str]] = []
        if "<" not in self._buf:  # every marker starts with "<": the common, fast case
            self._emit(self._buf, pieces)
            self._buf = ""
            return pieces
        while True:
            index, marker = self._next_marker()
            if marker is None:
                keep = self._partial_marker_length()
                ready = self._buf[: len(self._buf) - keep]
                self._buf = self._buf[len(self._buf) - keep :]
                self._emit(ready, pieces)
                return pieces
            self._emit(self._buf[:index], pieces)
            self._buf = self._buf[index + len(marker) :]
            self._transition(marker)

    def flush(self) -> list[tuple[str, str]]:
        """Release held-back text at the end of the stream."""
        pieces: list[tuple[str, str]] = []
        self._emit(self._buf, pieces)
        self._buf = ""
        return pieces

    def _next_marker(self) -> tuple[int, str | None]:
        best: tuple[int, str | None] = (-1, None)
        for marker in MARKERS:
            i = self._buf.find(marker)
            if i >= 0 and (best[1] is None or i < best[0]):
                best = (i, marker)
        return best

    def _partial_marker_length(self) -> int:
        for start in range(max(0, len(self._buf) - self._longest + 1), len(self._buf)):
            tail = self._buf[start:]
            if any(m.startswith(tail) for m in MARKERS):
                return len(self._buf) - start
        return 0

    def _emit(self, text: str, pieces: list[tuple[str, str]]) -> None:
        if self._state == _CHANNEL_HEADER:
            self._header += text
            return
        if self._state == _ROLE_HEADER:
            return
        if self._trim:
            text = text.lstrip()
            if not text:
                return
            self._trim = False
        if not text:
            return
        if pieces and pieces[-1][0] == self._state:
            pieces[-1] = (self._state, pieces[-1][1] + text)
        else:
            pieces.append((self._state, text))

    def _transition(self, marker: str) -> None:
        if marker == THINK_OPEN:
            self._enter(REASONING)
        elif marker in (THINK_CLOSE, END):
            self._enter(CONTENT)
        elif marker == CHANNEL:
            self._state, self._header = _CHANNEL_HEADER, ""
        elif marker == START:
            self._state = _ROLE_HEADER
        elif marker == MESSAGE and self._state == _CHANNEL_HEADER:
            channel = self._header.strip().split(" ", 1)[0]
            self._enter(REASONING if channel == "analysis" else CONTENT)
        elif marker == MESSAGE and self._state == _ROLE_HEADER:
            self._enter(CONTENT)

    def _enter(self, state: str) -> None:
        self._state = state
        self._trim = True
