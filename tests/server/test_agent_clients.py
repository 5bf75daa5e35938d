"""Agent clients against ``serve``: the OpenAI Agents SDK, and a request shaped like Codex's."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.fixtures.models import CHAT, DemoCache
from tests.fixtures.server import LiveServer, connection, raw_request

LONG_CHAT = "mlxk2/demo-chat-long"
#: Filler that is one token of the demo tokenizer (13 characters): a 40 KB body
#: then prefills in seconds on a CPU, and still overflows the 2k-token demo model.
FILLER = " instructions"


def test_an_agent_calls_its_tool_and_reaches_a_final_answer(live):
    from agents import (
        Agent,
        ModelSettings,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI
    from pydantic import BaseModel, Field

    class Forecast(BaseModel):
        summary: str = Field(max_length=20)

    set_tracing_disabled(True)
    calls: list[str] = []

    @function_tool
    def get_weather(city: Literal["Paris", "Rome"]) -> str:
        """The weather in a city."""
        calls.append(city)
        return "sunny, 21 degrees"

    client = AsyncOpenAI(base_url=live.base_url, api_key="unused", max_retries=0)
    # The output type is a schema, so the random model's last turn ends (the SDK
    # treats a reply cut at max_tokens as a failure).
    agent = Agent(name="weather", instructions="Answer with the weather.",
                  tools=[get_weather], model=OpenAIResponsesModel(CHAT, client),
                  output_type=Forecast,
                  model_settings=ModelSettings(tool_choice="required", temperature=0,
                                               max_tokens=200, parallel_tool_calls=False))
    result = asyncio.run(Runner.run(agent, "What is the weather in Paris?", max_turns=4))
    assert len(calls) == 1
    assert isinstance(result.final_output, Forecast)
    kinds = [item.type for item in result.new_items]
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"]
    assert kinds[-1] == "message_output_item"


def _codex_tool(i: int) -> dict[str, Any]:
    properties = {f"arg_{k}": {"type": "string", "description": FILLER * 24}
                  for k in range(2)}
    return {"type": "function", "name": f"tool_{i}", "strict": False,
            "description": f"Tool number {i}: " + FILLER * 120,
            "parameters": {"type": "object", "properties": properties,
                           "required": ["arg_0"], "additionalProperties": False}}


def codex_body(model: str) -> dict[str, Any]:
    """A first request as Codex CLI sends it: developer and user messages, nine tools."""
    developer = "You are a coding agent. " + FILLER * 1350
    return {
        "model": model, "stream": True, "store": False, "tool_choice": "auto",
        "parallel_tool_calls": True, "reasoning": {"summary": "auto"},
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "session-1",
        "client_metadata": {"originator": "codex_cli_rs"}, "max_output_tokens": 8,
        "instructions": "You are Codex, based on a local model.",
        "input": [
            {"type": "message", "role": "developer",
             "content": [{"type": "input_text", "text": developer}]},
            {"type": "message", "role": "developer",
             "content": [{"type": "input_text", "text": "<permissions>sandboxed</permissions>"}]},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "<environment_context>/work"
                                                        "</environment_context>"}]},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "List the files."}]},
        ],
        "tools": [_codex_tool(i) for i in range(9)],
    }


@pytest.fixture(scope="module")
def long_context_server(demo_cache: DemoCache, tmp_path_factory: pytest.TempPathFactory,
                        make_server: Any) -> LiveServer:
    """The demo chat model with a 64k context, in a hub of its own."""
    root = tmp_path_factory.mktemp("long_hub")
    source = demo_cache.paths[CHAT]
    repo = source.parents[1]
    target = root / "models--mlxk2--demo-chat-long"
    shutil.copytree(repo, target, symlinks=False)
    for config in target.glob("snapshots/*/config.json"):
        data = json.loads(Path(config).read_text())
        data["max_position_embeddings"] = 65536
        config.unlink()
        config.write_text(json.dumps(data))
    return make_server(preload=LONG_CHAT, root=root)


def test_a_codex_shaped_request_streams_on_a_long_context_model(long_context_server):
    body = codex_body(LONG_CHAT)
    assert len(json.dumps(body)) > 40_000
    conn = connection(long_context_server.url)
    conn.timeout = 600  # a prefill of thousands of tokens on a shared CPU
    try:
        conn.request("POST", "/v1/responses", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200, response.read()[:300]
        text = response.read().decode()
    finally:
        conn.close()
    events = [json.loads(line[len("data: "):]) for line in text.split("\n")
              if line.startswith("data: ")]
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    assert events[-1]["response"]["usage"]["input_tokens"] > 2048


def test_a_codex_shaped_request_overflows_a_small_context_with_a_clear_code(live):
    response = raw_request(live.url, "POST", "/v1/responses", body=codex_body(CHAT))
    assert response.status == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
