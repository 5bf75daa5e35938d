"""The incremental JSON call reader: names early, argument pieces that are prefixes of the
parsed arguments at every character."""

from __future__ import annotations

import json

import pytest

from mlxk2.engine.tool_stream import JsonCallReader

BODIES = [
    '\n{"name":"get_weather","arguments":{"location":"Paris, \\"FR\\" \\u00e9\\ud83d\\ude00",'
    '"unit":"celsius","n":[1,2.50,-0,1e2,true,null,{}],"o":{"a":[]}}}\n',
    '[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {"y": "z\\n"}}]',
    '{ "id" : "c1" , "name" : "tab\\tbed" , "arguments" : { "k" : [ 0.5 , -3 ] } }',
]


@pytest.mark.parametrize("body", BODIES)
def test_arguments_are_a_prefix_of_the_parsed_ones_at_every_character(body):
    parsed = json.loads(body)
    calls = parsed if isinstance(parsed, list) else [parsed]
    wanted = [json.dumps(c["arguments"], ensure_ascii=False) for c in calls]
    reader = JsonCallReader()
    for char in body:
        reader.feed(char)
        for progress, full in zip(reader.calls, wanted, strict=False):
            assert full.startswith(progress.arguments)
    assert [p.arguments for p in reader.calls] == wanted
    assert [p.name for p in reader.calls] == [c["name"] for c in calls]


def test_the_name_is_known_before_the_arguments_are_complete():
    reader = JsonCallReader()
    reader.feed('{"name": "f", "arguments": {"a": "lo')
    (progress,) = reader.calls
    assert (progress.name, progress.arguments) == ("f", '{"a": "lo')


def test_an_escape_cut_in_half_waits_for_its_end():
    reader = JsonCallReader()
    reader.feed('{"name": "f", "arguments": {"a": "x\\u00')
    assert reader.calls[0].arguments == '{"a": "x'
    reader.feed('e9\\ud83d')  # a high surrogate waits for its pair
    assert reader.calls[0].arguments == '{"a": "x\u00e9'
    reader.feed('\\ude00"}}')
    assert reader.calls[0].arguments == '{"a": "x\u00e9\U0001f600"}'


def test_text_that_is_not_json_stops_the_pieces():
    reader = JsonCallReader()
    reader.feed('{"name": "f", "arguments": {"a": 1,, "b": 2}}')
    assert reader.calls[0].arguments == '{"a": 1, '
