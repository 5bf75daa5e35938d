"""Formatting helpers shared by the human renderers: sizes, times, tables, colour."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TextIO

_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ELLIPSIS = "\u2026"
#: Narrowest a shrinkable column gets, so a cell keeps a readable stub.
_MIN_SHRUNK = 8
#: A wrapped column narrower than this moves under its row.
_MIN_WRAPPED = 20
_INDENT = "    "


def human_size(num_bytes: int) -> str:
    """Bytes in the spec's compact style: ``588B``, ``1.2KB``, ``2.3GB``."""
    size = float(num_bytes)
    for unit in _UNITS:
        if size < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{int(size)}B"
            return f"{size:.1f}{unit}" if size < 100 else f"{size:.0f}{unit}"
        size /= 1024
    raise AssertionError("unreachable")


def parse_iso_utc(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def relative_time(stamp: str, now: datetime | None = None) -> str:
    """``3 days ago`` style text for an ISO-8601 UTC timestamp."""
    now = now or datetime.now(timezone.utc)
    seconds = max(0, int((now - parse_iso_utc(stamp)).total_seconds()))
    for span, name in ((86400 * 365, "year"), (86400 * 30, "month"), (86400, "day"),
                       (3600, "hour"), (60, "minute")):
        if seconds >= span:
            count = seconds // span
            return f"{count} {name}{'s' if count != 1 else ''} ago"
    return "just now"


def visible_width(text: str) -> int:
    """Terminal columns ``text`` takes: colour codes take none, wide (CJK) characters two."""
    return sum(_char_width(c) for c in _ANSI.sub("", text))


def _char_width(char: str) -> int:
    if unicodedata.category(char) in ("Mn", "Me", "Cf"):  # combining marks, zero-width
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _prefix(text: str, width: int) -> str:
    """The longest start of ``text`` that fits in ``width`` columns."""
    used = 0
    for index, char in enumerate(text):
        used += _char_width(char)
        if used > width:
            return text[:index]
    return text


def truncate(text: str, width: int) -> str:
    """Plain ``text`` cut to ``width`` columns, ending in an ellipsis when cut."""
    if visible_width(text) <= width:
        return text
    return _prefix(text, width - 1) + ELLIPSIS


def truncate_middle(text: str, width: int) -> str:
    """Plain ``text`` in ``width`` columns, an ellipsis standing for its middle.

    Both ends stay readable: for ``org/Model-7B-4bit`` the org and the quantisation,
    which tell rows apart where a cut end would leave them all ``mlx-commu…``.
    """
    if visible_width(text) <= width:
        return text
    head = _prefix(text, (width - 1) // 3)
    tail = _prefix(text[::-1], width - 1 - visible_width(head))[::-1]
    return head + ELLIPSIS + tail


def wrap(text: str, width: int) -> list[str]:
    """Plain ``text`` in lines of at most ``width`` columns, broken at spaces where possible."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if visible_width(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while visible_width(word) > width:  # a word longer than the column: break it
            head = _prefix(word, width) or word[:1]
            lines.append(head)
            word = word[len(head):]
        line = word
    if line or not lines:
        lines.append(line)
    return lines


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - visible_width(text))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *,
          max_width: int | None = None, truncated: Sequence[str] = (),
          wrapped: Sequence[str] = ()) -> str:
    """Left-aligned columns separated by two spaces; the header is underlined by nothing.

    Widths count what the terminal shows (colour codes none, CJK two), so coloured
    cells line up. When the table is wider than ``max_width``, the columns named in
    ``truncated`` (their middle replaced by an ellipsis) and ``wrapped`` (continued on extra lines)
    give up columns, widest first, so rows do not wrap on the terminal. A wrapped
    column left too narrow to read moves under its row instead, indented. Those
    columns must hold plain text.
    """
    natural = [visible_width(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            natural[i] = max(natural[i], visible_width(cell))
    shown = list(range(len(headers)))
    widths = list(natural)
    below: list[int] = []
    if max_width is not None:
        shrinkable = [i for i, h in enumerate(headers) if h in truncated or h in wrapped]
        widths = _fitted(natural, shown, shrinkable, headers, max_width)
        below = [i for i in shrinkable if headers[i] in wrapped
                 and widths[i] < min(natural[i], _MIN_WRAPPED)]
        if below:
            shown = [i for i in shown if i not in below]
            widths = _fitted(natural, shown, shrinkable, headers, max_width)
    lines = [_line([headers[i] for i in shown], [widths[i] for i in shown])]
    for row in rows:
        cells: list[list[str]] = []
        for i in shown:
            if widths[i] >= natural[i]:
                cells.append([row[i]])
            elif headers[i] in wrapped:
                cells.append(wrap(row[i], widths[i]))
            else:
                cells.append([truncate_middle(row[i], widths[i])])
        for depth in range(max(len(c) for c in cells)):
            lines.append(_line([c[depth] if depth < len(c) else "" for c in cells],
                               [widths[i] for i in shown]))
        for i in below:
            if row[i]:
                lines.extend(_INDENT + part
                             for part in wrap(row[i], max(1, (max_width or 0) - len(_INDENT))))
    return "\n".join(lines)


def _fitted(natural: Sequence[int], shown: Sequence[int], shrinkable: Sequence[int],
            headers: Sequence[str], max_width: int) -> list[int]:
    """Column widths with the excess over ``max_width`` taken from the widest shrinkable."""
    widths = list(natural)
    excess = sum(widths[i] for i in shown) + 2 * (len(shown) - 1) - max_width
    floors = {i: max(_MIN_SHRUNK, visible_width(headers[i])) for i in shrinkable if i in shown}
    while excess > 0:
        candidates = [i for i in floors if widths[i] > floors[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(_pad(c, widths[i]) for i, c in enumerate(cells)).rstrip()


def terminal_width(stream: TextIO) -> int | None:
    """Columns a table on ``stream`` must fit: the terminal's, or ``COLUMNS`` if set.

    None for a pipe or file, so scripts always get whole names and reasons.
    """
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return None


def color_enabled(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (no-color.org)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return hasattr(stream, "isatty") and stream.isatty()


_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


def paint(text: str, style: str, enabled: bool) -> str:
    if not enabled:
        return text
    return f"\033[{_CODES[style]}m{text}\033[0m"
