"""Grammars, tool calls and choices in the shared batch, on the real tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mlxk2.engine.batch import GenerationRequest, ModelBatch
from mlxk2.engine.chat import build_prompt_tokens
from mlxk2.engine.constraints import ConstraintError, ConstraintSpec, compiler_for
from mlxk2.engine.events import (
    Delta,
    Event,
    Finished,
    ToolCall,
    ToolCallArguments,
    ToolCallStart,
    collect_choices,
)
from mlxk2.engine.generate import run_request
from mlxk2.engine.sampling import SamplingParams
from mlxk2.engine.tools import (
    GENERIC_TOOL_PROMPT,
    ToolCalling,
    ToolCallScanner,
    ToolChoice,
    ToolFunction,
    build_tool_prompt,
    forced_call_grammar,
    template_messages,
    template_takes_tools,
)
from tests.fixtures.json_schemas import SCHEMAS
from tests.fixtures.models import CHAT

WEATHER = ToolFunction("get_weather", "Weather for a city", json.dumps(
    {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
     "required": ["city"]}))


def _prompt(loaded: Any, text: str) -> list[int]:
    return build_prompt_tokens(loaded.tokenizer, [{"role": "user", "content": text}])


def _run_rows(loaded: Any, requests: list[GenerationRequest]) -> tuple[list[list[Event]],
                                                                        ModelBatch]:
    """Run ``requests`` together in one batch; each one's events, in order."""
    batch = ModelBatch(loaded, max_batch=len(requests), prompt_cache=0)
    events: list[list[Event]] = [[] for _ in requests]
    for i, request in enumerate(requests):
        batch.add(request, events[i].append)
    while batch.busy:
        batch.step()
    return events, batch


def _text(events: list[Event]) -> str:
    return "".join(e.content for e in events if isinstance(e, Delta))


def test_free_rows_beside_constrained_rows_equal_their_solo_runs(tiny_chat):
    free = [GenerationRequest(_prompt(tiny_chat, p), 24, SamplingParams())
            for p in ("Tell me about the weather.", "What is a river?")]
    constrained = [GenerationRequest(_prompt(tiny_chat, "JSON please"), 200, SamplingParams(),
                                     constraint=ConstraintSpec.json_schema(SCHEMAS[name]))
                   for name in ("nested_object", "array_of_objects")]
    solo = [_text(_run_rows(tiny_chat, [r])[0][0]) for r in free]
    mixed, batch = _run_rows(tiny_chat, [free[0], *constrained, free[1]])
    assert [_text(mixed[0]), _text(mixed[3])] == solo
    for events, name in zip(mixed[1:3], ("nested_object", "array_of_objects"), strict=True):
        jsonschema.validate(json.loads(_text(events)), SCHEMAS[name])
    assert batch.mask_steps > 0 and batch.mask_s > 0


def test_a_finished_grammar_ends_the_request_with_a_stop_token(tiny_chat):
    spec = ConstraintSpec.json_schema({"enum": ["yes", "no"]})
    (events,), _ = _run_rows(tiny_chat, [GenerationRequest(_prompt(tiny_chat, "?"), 50,
                                                           SamplingParams(), constraint=spec)])
    done = events[-1]
    assert isinstance(done, Finished) and done.finish_reason == "stop"
    assert json.loads(_text(events)) in ("yes", "no")
    assert done.token_ids[-1] in tiny_chat.stop_token_ids


def test_a_lark_grammar_is_followed(tiny_chat):
    spec = ConstraintSpec("lark", 'start: "x" /[0-9]{3}/ "y"')
    (events,), _ = _run_rows(tiny_chat, [GenerationRequest(_prompt(tiny_chat, "?"), 50,
                                                           SamplingParams(), constraint=spec)])
    text = _text(events)
    assert len(text) == 5 and text[0] == "x" and text[1:4].isdigit() and text[4] == "y"


@pytest.mark.parametrize("spec", [
    ConstraintSpec.json_schema({"type": "wibble"}),
    ConstraintSpec("json_schema", "not json"),
    ConstraintSpec("lark", "start: undefined_rule"),
])
def test_a_spec_that_does_not_compile_is_a_constraint_error(tiny_chat, spec):
    with pytest.raises(ConstraintError):
        compiler_for(tiny_chat).check(spec)


def test_forced_calls_follow_the_function_schema(tiny_chat):
    choice = ToolChoice("function", "get_weather")
    spec = forced_call_grammar([WEATHER], choice, parallel=False)
    calling = ToolCalling("json_tools", "<tool_call>", "</tool_call>",
                          json.dumps([WEATHER.openai()]))
    request = GenerationRequest(_prompt(tiny_chat, "Weather?"), 200, SamplingParams(),
                                constraint=spec, tools=calling)
    (events,), _ = _run_rows(tiny_chat, [request])
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].index == 0
    jsonschema.validate(json.loads(calls[0].arguments), json.loads(WEATHER.parameters))
    assert _text(events) == ""
    assert isinstance(events[-1], Finished) and events[-1].finish_reason == "tool_calls"


FORECAST = ToolFunction("get_forecast", "Forecast for a place", json.dumps({
    "type": "object",
    "properties": {"location": {"type": "string", "maxLength": 12},
                   "unit": {"enum": ["celsius", "fahrenheit"]},
                   "days": {"type": "integer", "minimum": 1, "maximum": 7},
                   "hours": {"type": "array", "items": {"type": "integer", "minimum": 0,
                                                        "maximum": 23}, "maxItems": 3}},
    "required": ["location", "unit", "days", "hours"]}))


def test_a_forced_call_streams_its_name_first_then_its_arguments_in_pieces(tiny_chat):
    spec = forced_call_grammar([FORECAST], ToolChoice("required"), parallel=False)
    calling = ToolCalling("json_tools", "<tool_call>", "</tool_call>",
                          json.dumps([FORECAST.openai()]))
    request = GenerationRequest(_prompt(tiny_chat, "Forecast?"), 300, SamplingParams(),
                                constraint=spec, tools=calling)
    (events,), _ = _run_rows(tiny_chat, [request])
    start, *pieces, call, done = events
    assert isinstance(start, ToolCallStart) and isinstance(call, ToolCall)
    assert (start.index, start.id, start.name) == (call.index, call.id, "get_forecast")
    assert len(pieces) > 3 and all(isinstance(p, ToolCallArguments) for p in pieces)
    assert "".join(p.arguments for p in pieces) == call.arguments
    jsonschema.validate(json.loads(call.arguments), json.loads(FORECAST.parameters))
    assert isinstance(done, Finished) and done.finish_reason == "tool_calls"


def test_n_choices_fork_from_one_prefill_and_seeds_reproduce(tiny_chat):
    request = GenerationRequest(_prompt(tiny_chat, "Hello there"), 10,
                                SamplingParams(temperature=1.0, seed=5), n=3)
    batch = ModelBatch(tiny_chat, max_batch=4, prompt_cache=0)
    first = collect_choices(run_request(batch, request), 3)
    again = collect_choices(run_request(batch, request), 3)
    assert [r.content for r in first] == [r.content for r in again]
    assert len({r.content for r in first}) == 3
    assert [r.finished.choice for r in first] == [0, 1, 2]
    prompt = len(request.prompt_tokens)
    assert [r.finished.cached_tokens for r in first] == [0, prompt - 1, prompt - 1]


def _scan(scanner: ToolCallScanner, text: str, size: int) -> list[Any]:
    """Feed ``text`` ``size`` characters at a time, then flush; everything reported."""
    parts: list[Any] = []
    for i in range(0, len(text), size):
        parts += scanner.feed(text[i:i + size])
    return parts + scanner.flush()


def test_scanner_finds_calls_across_pieces_and_keeps_other_text():
    calling = ToolCalling("json_tools", "<tool_call>", "</tool_call>")
    text = 'Sure. <tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call> done'
    parts = _scan(ToolCallScanner(calling), text, 3)
    assert "".join(p for p in parts if isinstance(p, str)) == "Sure.  done"
    whole = [p for p in parts if isinstance(p, ToolCall)]
    assert [(c.name, json.loads(c.arguments)) for c in whole] == [("f", {"a": 1})]
    at = parts.index(whole[0])  # text and calls come in the order of the reply
    assert "".join(p for p in parts[at:] if isinstance(p, str)) == " done"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_scanner_streams_a_call_name_first_and_arguments_that_join_to_the_parsed_ones(size):
    calling = ToolCalling("json_tools", "<tool_call>", "</tool_call>")
    text = ('<tool_call>\n[{"name": "get_forecast", "arguments": {"location": "Paris, \\"FR\\"'
            ' \\u00e9\\ud83d\\ude00", "days":3, "hours" : [1, 2.50, -0, 1e2], "ok": true,'
            ' "none": null, "empty": {}}}, {"name": "b", "arguments": {"y": "z\\n"}}]\n'
            "</tool_call>")
    parts = _scan(ToolCallScanner(calling), text, size)
    calls = [p for p in parts if isinstance(p, ToolCall)]
    assert [c.name for c in calls] == ["get_forecast", "b"] and [c.index for c in calls] == [0, 1]
    first = parts.index(calls[0])
    assert isinstance(parts[0], ToolCallStart) and parts[0].name == "get_forecast"
    pieces = [p for p in parts[:first] if isinstance(p, ToolCallArguments)]
    assert len(pieces) > 10 and "".join(p.arguments for p in pieces) == calls[0].arguments
    assert json.loads(calls[0].arguments)["location"] == 'Paris, "FR" \u00e9\U0001f600'
    # A list's later calls follow whole, once the first is complete.
    start, rest, second = parts[first + 1:]
    assert (start.index, start.name, rest.arguments) == (1, "b", calls[1].arguments)
    assert second == calls[1] and calls[1].arguments == '{"y": "z\\n"}'


def test_scanner_waits_for_a_name_written_after_the_arguments():
    calling = ToolCalling("json_tools", "<tool_call>", "</tool_call>")
    text = '<tool_call>{"arguments": {"x": 1}, "name": "late"}</tool_call>'
    parts = _scan(ToolCallScanner(calling), text, 1)
    start, pieces, call = parts
    assert (start.name, pieces.arguments, call.arguments) == ("late", '{"x": 1}', '{"x": 1}')


def test_a_streamed_call_that_breaks_off_comes_back_as_text():
    calling = ToolCalling("json_tools", "<tool_call>", "</tool_call>")
    text = '<tool_call>{"name": "f", "arguments": {"a": 1'
    scanner = ToolCallScanner(calling)
    parts = _scan(scanner, text, 4)
    assert isinstance(parts[0], ToolCallStart)
    assert not any(isinstance(p, ToolCall) for p in parts) and scanner.calls == []
    assert parts[-1] == text


def test_scanner_gives_back_a_call_that_does_not_parse():
    scanner = ToolCallScanner(ToolCalling("json_tools", "<tool_call>", "</tool_call>"))
    assert scanner.feed("<tool_call>{broken</tool_call>") == ["<tool_call>{broken</tool_call>"]


def test_scanner_reads_a_call_that_runs_to_the_end_of_the_reply():
    scanner = ToolCallScanner(ToolCalling("mistral", "[TOOL_CALLS]", ""))
    assert scanner.feed('[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}') == []
    start, arguments, call = scanner.flush()
    assert isinstance(start, ToolCallStart) and isinstance(arguments, ToolCallArguments)
    assert (start.id, start.name) == (call.id, call.name) == (call.id, "get_weather")
    assert arguments.arguments == call.arguments and json.loads(call.arguments) == {"city": "Oslo"}


def test_generic_prompt_writes_tool_turns_as_text():
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    out = template_messages(messages, [WEATHER], native=False)
    assert out[0]["role"] == "system"
    assert out[0]["content"].startswith(GENERIC_TOOL_PROMPT.split("{tools}")[0])
    assert '"get_weather"' in out[0]["content"]
    assert out[2] == {"role": "assistant", "content":
                      '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
                      "</tool_call>"}
    assert out[3] == {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"}


def test_a_template_that_takes_tools_gets_them_and_structured_tool_turns(demo_cache):
    from mlx_lm.utils import load_tokenizer

    tokenizer = load_tokenizer(Path(demo_cache.paths[CHAT]))
    tokenizer.chat_template = (
        "{% for t in tools %}TOOL {{ t.function.name }};{% endfor %}"
        "{% for m in messages %}[{{ m.role }}]{{ m.content or '' }}"
        "{% for c in m.tool_calls or [] %}CALL {{ c.function.name }} "
        "{{ c.function.arguments.city }}{% endfor %}{% endfor %}[assistant]")
    assert template_takes_tools(tokenizer)
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    tokens = build_tool_prompt(tokenizer, messages, [WEATHER], ToolChoice("auto"))
    assert tokenizer.decode(tokens) == ("TOOL get_weather;[user]Weather?[assistant]"
                                        "CALL get_weather Oslo[tool]sunny[assistant]")


def test_llguidance_is_imported_only_for_a_constraint_or_logprobs():
    import subprocess
    import sys

    code = ("import sys\n"
            "import mlxk2.engine.generate, mlxk2.server.endpoints.chat, mlxk2.ops.run\n"
            "print('llguidance' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
