"""Reading JSON tool calls while they are decoded: each name early, the arguments in pieces.

A call in the generic format, ``{"name": "get_weather", "arguments": {"location":
"Paris"}}`` (or a list of such objects, as SmolLM2 writes them), arrives a few
characters at a time. :class:`JsonCallReader` lexes it incrementally. A call's
name is known once its top-level ``"name"`` string is complete; the value of its
``"arguments"`` comes out re-serialised the way ``json.dumps(value,
ensure_ascii=False)`` writes it (``", "`` and ``": "`` between items, no other
whitespace, numbers as Python prints them), because that is the text the
parsed call's ``arguments`` holds: the pieces are prefixes of it. Strings come
out as they are decoded, numbers and ``true``/``false``/``null`` once complete.

The reader never raises: on text that is not JSON it stops adding pieces, and
the parser that reads the whole call at its end decides what it was.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_LITERALS = ("true", "false", "null")
_HEX = frozenset("0123456789abcdefABCDEF")

# States of a container frame: the first key/value may instead close it.
_KEY0, _KEY, _COLON, _VALUE0, _VALUE, _NEXT = "key0", "key", "colon", "value0", "value", "next"


@dataclass
class CallProgress:
    """What is known so far of one call in the text.

    ``arguments`` is the canonical text of the arguments decoded so far; the
    parsed call's ``arguments`` starts with it.
    """

    name: str | None = None
    id: str | None = None
    arguments: str = ""


@dataclass
class _Frame:
    kind: str  # "{" or "["
    state: str
    key: str | None = None


@dataclass
class _Token:
    kind: str  # "string", "number" or "literal"
    raw: str = ""
    is_key: bool = False
    escaped: bool = False
    decoded_upto: int = 0


class JsonCallReader:
    """Tool calls in the generic JSON format, read as their text grows (one call body).

    ``calls`` lists every call object begun so far, in order.
    """

    def __init__(self) -> None:
        self.calls: list[CallProgress] = []
        self._stack: list[_Frame] = []
        self._token: _Token | None = None
        self._started = False
        self._broken = False
        self._capture: int | None = None  # the depth of the arguments value being copied

    def feed(self, text: str) -> None:
        """Read more of the call's text."""
        for char in text:
            if self._broken:
                return
            self._char(char)
        token = self._token
        if not self._broken and token is not None and token.kind == "string" \
                and self._capture is not None:
            self._emit_string(token, final=False)

    # ---- the lexer ------------------------------------------------------------

    def _char(self, char: str) -> None:
        token = self._token
        if token is not None:
            if token.kind == "string":
                self._string_char(token, char)
                return
            if (token.kind == "number" and char in _NUMBER_CHARS) \
                    or (token.kind == "literal" and char.isalpha()):
                token.raw += char
                return
            self._token = None
            self._scalar_done(token)
            if self._broken:
                return
        if char in " \t\r\n":
            return
        frame = self._stack[-1] if self._stack else None
        if char == '"' and frame is not None and frame.kind == "{" \
                and frame.state in (_KEY0, _KEY):
            self._token = _Token("string", is_key=True)
        elif char in "}]":
            self._close(frame, char)
        elif char == ":" and frame is not None and frame.state == _COLON:
            frame.state = _VALUE
            self._emit(": ")
        elif char == "," and frame is not None and frame.state == _NEXT:
            frame.state = _KEY if frame.kind == "{" else _VALUE
            self._emit(", ")
        elif not self._at_value():
            self._broken = True
        elif char in "{[":
            self._open(char)
        elif char == '"':
            self._token = _Token("string")
            self._emit('"')
        elif char == "-" or char.isdigit():
            self._token = _Token("number", char)
        elif char.isalpha():
            self._token = _Token("literal", char)
        else:
            self._broken = True

    def _at_value(self) -> bool:
        if not self._stack:
            return not self._started
        frame = self._stack[-1]
        return frame.state == _VALUE or (frame.kind == "[" and frame.state == _VALUE0)

    def _open(self, char: str) -> None:
        depth = self._call_frame_depth()
        call = len(self._stack) == depth
        parent = self._stack[-1] if self._stack else None
        if parent is not None and len(self._stack) == depth + 1 \
                and parent.key == "arguments" and self._capture is None:
            self._capture = len(self._stack)
        self._started = True
        self._emit(char)
        self._stack.append(_Frame(char, _KEY0 if char == "{" else _VALUE0))
        if call and char == "{":
            self.calls.append(CallProgress())

    def _close(self, frame: _Frame | None, char: str) -> None:
        kind = "{" if char == "}" else "["
        allowed = (_KEY0, _NEXT) if kind == "{" else (_VALUE0, _NEXT)
        if frame is None or frame.kind != kind or frame.state not in allowed:
            self._broken = True
            return
        self._emit(char)
        self._stack.pop()
        if self._capture == len(self._stack):
            self._capture = None
        self._value_done(None)

    def _call_frame_depth(self) -> int:
        """Stack depth of a call object: 0 for one object, 1 inside a list of calls."""
        if self._stack and self._stack[0].kind == "[":
            return 1
        return 0

    def _value_done(self, value: str | None) -> None:
        """A value ended; ``value`` is a string value's decoded text."""
        if not self._stack:
            return
        frame = self._stack[-1]
        if frame.kind == "{" and len(self._stack) == self._call_frame_depth() + 1 \
                and self.calls and value is not None:
            call = self.calls[-1]
            if frame.key == "name" and call.name is None:
                call.name = value
            elif frame.key == "id" and call.id is None:
                call.id = value
        frame.state = _NEXT

    # ---- scalars --------------------------------------------------------------

    def _string_char(self, token: _Token, char: str) -> None:
        if token.escaped:
            token.escaped = False
        elif char == "\\":
            token.escaped = True
        elif char == '"':
            self._token = None
            self._scalar_done(token)
            return
        token.raw += char

    def _scalar_done(self, token: _Token) -> None:
        if token.kind == "string":
            try:
                value = json.loads(f'"{token.raw}"')
            except json.JSONDecodeError:
                self._broken = True
                return
            if token.is_key:
                frame = self._stack[-1]
                frame.key, frame.state = value, _COLON
                if self._capture is not None:
                    self._emit('"')
                    self._emit_string(token, final=True)
                    self._emit('"')
                return
            self._emit_string(token, final=True)
            self._emit('"')
            self._value_done(value)
            return
        if token.kind == "number" and _NUMBER.fullmatch(token.raw):
            self._emit(json.dumps(json.loads(token.raw)))
        elif token.kind == "literal" and token.raw in _LITERALS:
            self._emit(token.raw)
        else:
            self._broken = True
            return
        self._value_done(None)

    def _emit_string(self, token: _Token, final: bool) -> None:
        """Copy the newly decoded part of a string inside the arguments, without its
        quotes (a key is copied whole, at its end)."""
        if self._capture is None or (token.is_key and not final):
            return
        end = len(token.raw) if final else _decodable(token.raw, token.decoded_upto)
        if end <= token.decoded_upto:
            return
        try:
            text = json.loads(f'"{token.raw[token.decoded_upto:end]}"')
        except json.JSONDecodeError:
            self._broken = True
            return
        token.decoded_upto = end
        self._emit(json.dumps(text, ensure_ascii=False)[1:-1])

    def _emit(self, text: str) -> None:
        if self._capture is not None and self.calls:
            self.calls[-1].arguments += text


def _decodable(raw: str, start: int) -> int:
    """How far ``raw`` (a string's text so far) can be decoded without cutting an escape.

    A ``\\u`` escape of a high surrogate waits for the escape that may pair with it.
    """
    i = start
    ok = start
    while i < len(raw):
        if raw[i] != "\\":
            i += 1
            ok = i
            continue
        if i + 1 >= len(raw):
            break
        if raw[i + 1] != "u":
            i += 2
            ok = i
            continue
        code = raw[i + 2:i + 6]
        if len(code) < 4 or not set(code) <= _HEX:
            break
        follow = raw[i + 6:i + 12]
        if 0xD800 <= int(code, 16) <= 0xDBFF and len(follow) < 6 \
                and "\\u".startswith(follow[:2]):
            break
        i += 6
        ok = i
    return ok
