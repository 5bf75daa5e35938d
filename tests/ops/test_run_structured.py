"""``run`` with a JSON schema, JSON format and tools, through the CLI on the demo model."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from tests.fixtures.cli import run_inprocess
from tests.fixtures.json_schemas import SCHEMAS
from tests.fixtures.schema import assert_valid_envelope

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 10}}, "required": ["city"]}}}


def _write(tmp_path: Path, name: str, document: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def test_json_schema_puts_the_parsed_object_beside_the_raw_text(demo_env, tmp_path):
    schema = SCHEMAS["nested_object"]
    result = run_inprocess("run", "demo-chat", "Describe a person.", "--json-schema",
                           _write(tmp_path, "schema.json", schema), "--max-tokens", "300",
                           "--json")
    assert result.code == 0, result.stderr
    doc = result.json
    assert_valid_envelope(doc)
    data = doc["data"]
    assert data["finish_reason"] == "stop"
    assert data["parsed"] == json.loads(data["response"])
    jsonschema.validate(data["parsed"], schema)


def test_format_json_prints_a_json_object_in_human_mode(demo_env):
    result = run_inprocess("run", "demo-chat", "Hi", "--format", "json", "--temperature", "1",
                           "--seed", "0", "--max-tokens", "400")
    assert result.code == 0, result.stderr
    assert isinstance(json.loads(result.stdout), dict)


def test_forced_tool_call_is_shown_in_human_mode_and_in_json(demo_env, tmp_path):
    tools = _write(tmp_path, "tools.json", [WEATHER])
    args = ("run", "demo-chat", "Weather in Oslo?", "--tools", tools, "--tool-choice",
            "get_weather", "--max-tokens", "600")
    human = run_inprocess(*args)
    assert human.code == 0, human.stderr
    assert "[tool call] get_weather {" in human.stdout
    doc = run_inprocess(*args, "--json").json
    assert_valid_envelope(doc)
    calls = doc["data"]["tool_calls"]
    assert doc["data"]["finish_reason"] == "tool_calls"
    assert calls and all(c["name"] == "get_weather" and c["id"] for c in calls)
    for call in calls:
        jsonschema.validate(call["arguments"], WEATHER["function"]["parameters"])


def test_bad_schema_and_bad_tool_files_are_validation_errors(demo_env, tmp_path):
    bad_schema = _write(tmp_path, "bad.json", {"type": "wibble"})
    result = run_inprocess("run", "demo-chat", "Hi", "--json-schema", bad_schema, "--json")
    assert result.code != 0
    assert result.json["error"]["type"] == "ValidationError"
    assert "schema" in result.json["error"]["message"].lower()
    not_tools = _write(tmp_path, "tools.json", {"tools": "none"})
    result = run_inprocess("run", "demo-chat", "Hi", "--tools", not_tools, "--json")
    assert result.json["error"]["type"] == "ValidationError"
