"""The envelope's text form: valid JSON that cannot drive a terminal."""

from __future__ import annotations

import json

from mlxk2.output.envelope import dumps, success_envelope


def test_control_characters_are_escaped_and_round_trip() -> None:
    text = "bell\x07 esc\x1b[31m del\x7f csi\x9b ünïcode"
    out = dumps(success_envelope("run", {"response": text}))
    assert not any((0x00 <= ord(c) < 0x20 and c != "\n") or 0x7f <= ord(c) <= 0x9f for c in out)
    assert "ünïcode" in out
    assert json.loads(out)["data"]["response"] == text
