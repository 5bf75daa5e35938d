"""User stop strings over a text stream.

Tokens arrive as short text pieces, and a stop string may span several of them.
:class:`StopMatcher` releases text as soon as it cannot be part of a stop
string, and holds back only the tail that still could be.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Cut a stream at the earliest occurrence of any stop string.

    The stop string itself and everything after it are dropped.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(dict.fromkeys(s for s in stops if s))
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.stopped = False
        #: The stop string that ended the stream, once one has.
        self.matched: str | None = None
        self._candidate: str | None = None

    def feed(self, text: str) -> tuple[str, bool]:
        """Add a piece of the stream.

        Returns:
            The text that is safe to show now, and whether a stop string was hit
            (after which every further call returns ``("", True)``).
        """
        if self.stopped:
            return "", True
        if not self._stops:
            return text, False
        buf = self._held + text
        hit = self._earliest_match(buf)
        pending = self._pending_start(buf)
        if hit is not None and (pending is None or pending >= hit):
            self._held = ""
            self.stopped = True
            self.matched = self._candidate
            return buf[:hit], True
        cut = len(buf) if pending is None else pending
        self._held = buf[cut:]
        return buf[:cut], False

    def flush(self) -> str:
        """The held-back tail at the end of the stream (cut at a stop string, if any)."""
        if self.stopped:
            return ""
        buf, self._held = self._held, ""
        hit = self._earliest_match(buf)
        if hit is not None:
            self.stopped = True
            self.matched = self._candidate
            return buf[:hit]
        return buf

    def _earliest_match(self, buf: str) -> int | None:
        found = [(i, s) for i, s in ((buf.find(s), s) for s in self._stops) if i >= 0]
        if not found:
            return None
        at, self._candidate = min(found, key=lambda pair: pair[0])
        return at

    def _pending_start(self, buf: str) -> int | None:
        """Where the longest tail of ``buf`` that could still grow into a stop begins."""
        for start in range(max(0, len(buf) - self._longest + 1), len(buf)):
            tail = buf[start:]
            if any(len(s) > len(tail) and s.startswith(tail) for s in self._stops):
                return start
        return None
