"""Real answers from a real model: SmolLM2-135M-Instruct, imported from its GGUF file.

The model is imported once per run (``tests/fixtures/realmodel.py``). Every check
here is on text a trained model wrote, greedy, so the results are fixed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlxk2.engine.chat import build_prompt_tokens
from mlxk2.engine.events import Delta, Finished
from mlxk2.engine.generate import generate
from mlxk2.engine.sampling import SamplingParams
from tests.fixtures.cli import cli_env, run_subprocess
from tests.fixtures.server import free_port, wait_until_healthy

CAPITAL = "What is the capital of France? Answer in one sentence."


def reply(loaded: Any, messages: list[dict[str, str]], **kwargs: Any) -> tuple[str, Finished]:
    prompt = build_prompt_tokens(loaded.tokenizer, messages)
    *chunks, done = generate(loaded, prompt, SamplingParams(), **kwargs)
    assert isinstance(done, Finished)
    assert all(isinstance(c, Delta) for c in chunks)
    return "".join(c.content for c in chunks), done


def test_greedy_answer_to_the_capital_of_france_is_paris(smollm2):
    text, done = reply(smollm2, [{"role": "user", "content": CAPITAL}], max_tokens=40)

    assert "Paris" in text
    assert done.finish_reason == "stop"  # the model ended its turn by itself


def test_imported_model_decodes_token_for_token_like_raw_mlx_lm(smollm2, smollm2_dir):
    from mlx_lm import generate as mlx_generate
    from mlx_lm import load as mlx_load
    from mlx_lm import stream_generate

    model, tokenizer = mlx_load(str(smollm2_dir))
    messages = [{"role": "user", "content": "Write one sentence about the sea."}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    raw_tokens = [r.token for r in stream_generate(model, tokenizer, prompt, max_tokens=24)]
    raw_text = mlx_generate(model, tokenizer, prompt, max_tokens=24)

    ours = build_prompt_tokens(smollm2.tokenizer, messages)
    *chunks, done = generate(smollm2, ours, SamplingParams(), max_tokens=24)

    assert ours == list(prompt)
    assert list(done.token_ids) == raw_tokens[: len(done.token_ids)]
    assert len(done.token_ids) == len(raw_tokens) or done.finish_reason == "stop"
    assert "".join(c.content for c in chunks) == raw_text.split("<|im_end|>")[0]


def test_a_second_turn_recalls_the_name_given_in_the_first(smollm2, smollm2_dir, tmp_path):
    chat = run_subprocess(
        "run", str(smollm2_dir), "--max-tokens", "24",
        input="My name is Ada. Please remember it.\nWhat is my name?\n/exit\n",
        env=cli_env(tmp_path / "hf_home"), timeout=240,
    )
    without_history, _ = reply(smollm2, [{"role": "user", "content": "What is my name?"}],
                               max_tokens=24)

    assert chat.code == 0, chat.stderr
    turns = [line for line in chat.stdout.splitlines() if line.strip()]
    assert len(turns) == 2, chat.stdout
    assert "Ada" in turns[1]
    assert "Ada" not in without_history  # the name can only have come from the first turn


def test_a_stop_string_cuts_the_real_answer_before_it(smollm2):
    full, _ = reply(smollm2, [{"role": "user", "content": CAPITAL}], max_tokens=40)
    cut, done = reply(smollm2, [{"role": "user", "content": CAPITAL}], max_tokens=40,
                      stop=["Paris"])

    assert done.finish_reason == "stop"
    assert "Paris" not in cut
    assert cut and full.startswith(cut)
    assert full[len(cut):].startswith("Paris")


@pytest.fixture(scope="module")
def served_smollm2(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[str]:
    """``mlxk2 serve`` on the imported model as a real process; yields its base URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("smollm2-serve") / "stderr.txt"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlxk2", "serve", "--model", str(smollm2_dir),
             "--port", str(port)],
            env=cli_env(tmp_path_factory.mktemp("serve-home")), stdout=subprocess.DEVNULL,
            stderr=log_file, text=True,
        )
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, [proc], log_path.read_text, timeout=180)
        try:
            yield url
        finally:
            proc.terminate()
            proc.wait(30)


@pytest.mark.parametrize("stream", [False, True])
def test_serve_gives_the_same_greedy_answer_through_the_openai_client(
    smollm2, smollm2_dir, served_smollm2, stream
):
    from openai import OpenAI

    messages = [{"role": "user", "content": CAPITAL}]
    expected, _ = reply(smollm2, messages, max_tokens=40)
    client = OpenAI(base_url=f"{served_smollm2}/v1", api_key="unused", timeout=180)
    request = {"model": str(smollm2_dir), "messages": messages, "max_tokens": 40,
               "temperature": 0}
    if stream:
        chunks = client.chat.completions.create(**request, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = client.chat.completions.create(**request).choices[0].message.content

    assert text == expected
    assert "Paris" in text


GET_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location", "unit"]}}}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def _weather_request(smollm2_dir: Path, tool_choice: str) -> dict[str, Any]:
    return {"model": str(smollm2_dir), "messages": WEATHER_QUESTION, "tools": [GET_WEATHER],
            "tool_choice": tool_choice, "temperature": 0, "max_tokens": 60}


def test_under_auto_the_small_model_answers_the_weather_question_itself(
        smollm2_dir, served_smollm2):
    """SmolLM2-135M does not call tools: its template takes none, so the generic tool
    prompt is used, and greedily it still writes an answer (a call would be parsed)."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{served_smollm2}/v1", api_key="unused", timeout=180)
    choice = client.chat.completions.create(**_weather_request(smollm2_dir, "auto")).choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert "Paris" in choice.message.content


def test_a_required_weather_call_from_the_real_model_names_paris_streamed_or_not(
        smollm2_dir, served_smollm2):
    import jsonschema
    from openai import OpenAI

    client = OpenAI(base_url=f"{served_smollm2}/v1", api_key="unused", timeout=180)
    request = {**_weather_request(smollm2_dir, "required"), "parallel_tool_calls": False}
    whole = client.chat.completions.create(**request).choices[0]
    assert whole.finish_reason == "tool_calls" and whole.message.content is None
    (call,) = whole.message.tool_calls
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, GET_WEATHER["function"]["parameters"])
    assert call.function.name == "get_weather" and "Paris" in arguments["location"]
    with client.chat.completions.stream(**request) as stream:
        streamed = stream.get_final_completion().choices[0]
    (again,) = streamed.message.tool_calls
    assert streamed.finish_reason == "tool_calls"
    assert (again.function.name, again.function.arguments) == \
        (call.function.name, call.function.arguments)
