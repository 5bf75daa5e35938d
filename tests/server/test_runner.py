"""Start-up settings: durations, JSON logs and the package's public surface."""

from __future__ import annotations

import json
import logging

import pytest

import mlxk2.server
from mlxk2.errors import ValidationError
from mlxk2.server.config import parse_duration
from mlxk2.server.runner import JsonLogFormatter


@pytest.mark.parametrize("text,seconds", [
    ("90", 90.0), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1.5m", 90.0),
    ("250ms", 0.25), ("0", 0.0), ("never", None), ("-1", None),
])
def test_keep_alive_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_bad_duration_is_a_validation_error():
    with pytest.raises(ValidationError):
        parse_duration("soon")


def test_json_log_lines_are_one_object_each():
    record = logging.LogRecord("mlxk2.server", logging.INFO, __file__, 1,
                               "loaded %s", ("demo",), None)
    entry = json.loads(JsonLogFormatter().format(record))
    assert entry["message"] == "loaded demo"
    assert entry["level"] == "info"
    assert entry["logger"] == "mlxk2.server"
    assert entry["time"].endswith("Z")


def test_public_surface():
    assert sorted(mlxk2.server.__all__) == [
        "ModelProvider", "ServerConfig", "Worker", "create_app", "parse_duration",
    ]
