"""``run``: refusing what cannot generate, one-shot and chat generation, the CLI end to end."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from mlxk2.engine.events import Delta, Finished
from mlxk2.errors import ModelIncompatibleError, ModelUnhealthyError
from mlxk2.ops import run as ops
from mlxk2.output.envelope import success_envelope
from mlxk2.output.run import ReplyPrinter, print_reply
from tests.fixtures.cache_cases import CASES, UNHEALTHY
from tests.fixtures.cli import cli_env, run_inprocess, run_subprocess
from tests.fixtures.models import BASE, CHAT
from tests.fixtures.schema import assert_valid_envelope

LONG_PROMPT = "What is the capital of France?"  # greedy reply runs to any limit
LOOP_PROMPT = "Write a poem"  # greedy reply repeats "leavesft" without end


# --- refusing models that cannot generate ------------------------------------------


@pytest.mark.parametrize(
    "key", [k for k in UNHEALTHY if not CASES[k].skipped_by_root]
)
def test_unhealthy_models_are_refused_with_the_list_reason(cache_env, key):
    case = CASES[key]
    with pytest.raises(ModelUnhealthyError) as info:
        ops.check_runnable(case.repo_id)
    assert case.expected_reason in info.value.message


@pytest.mark.parametrize("key", ["gguf", "pytorch", "unsupported_arch", "audio"])
def test_non_mlx_or_unsupported_models_are_incompatible(cache_env, key):
    case = CASES[key]
    with pytest.raises(ModelIncompatibleError) as info:
        ops.check_runnable(case.repo_id)
    assert case.expected_reason in info.value.message


def test_embedding_models_are_refused_because_run_generates_text(cache_env):
    with pytest.raises(ModelIncompatibleError, match="embedding"):
        ops.check_runnable(CASES["embedding"].repo_id)


@pytest.mark.parametrize(
    ("key", "error_type"),
    [("gguf", "model_incompatible"), ("embedding", "model_incompatible"),
     ("config_invalid", "model_unhealthy")],
)
def test_cli_refusal_is_a_json_error_not_a_traceback(cache_env, key, error_type):
    result = run_inprocess("run", CASES[key].repo_id, "hi", "--json")
    assert result.code == 1
    doc = result.json
    assert doc["status"] == "error"
    assert doc["command"] == "run"
    assert doc["error"]["type"] == error_type


def test_healthy_demo_model_passes_the_checks(demo_env):
    resolved, info = ops.check_runnable("demo-chat")
    assert resolved.name == CHAT
    assert info.runnable


# --- one-shot and chat through the library -------------------------------------------


def test_one_shot_json_data_is_schema_valid_with_exact_usage(demo_env, tiny_chat):
    model = ops.RunnableModel(*ops.check_runnable(CHAT), tiny_chat)
    prepared = ops.prepare_one_shot(tiny_chat, LONG_PROMPT, max_tokens=6)
    result = ops.collect(CHAT, LONG_PROMPT, ops.run_one_shot(model, prepared, ops.SamplingParams()))
    data = result.to_dict()
    assert_valid_envelope(success_envelope("run", data))
    assert data["usage"] == {"prompt_tokens": len(prepared.tokens), "completion_tokens": 6,
                             "total_tokens": len(prepared.tokens) + 6}
    assert data["tokens_generated"] == 6
    assert data["finish_reason"] == "length"
    assert "reasoning" not in data
    assert set(data["timings"]) == {"load_s", "ttft_s", "tokens_per_s"}


def test_base_model_gets_the_raw_prompt(tiny_base):
    prepared = ops.prepare_one_shot(tiny_base, "Once upon a time", system="Style: plain")
    assert tiny_base.tokenizer.decode(prepared.tokens) == "Style: plain\n\nOnce upon a time"


def test_no_chat_template_sends_the_prompt_as_written(tiny_chat):
    prepared = ops.prepare_one_shot(tiny_chat, "Once upon a time", use_template=False)
    assert tiny_chat.tokenizer.decode(prepared.tokens) == "Once upon a time"


def test_chat_session_keeps_history_and_clear_forgets_it(tiny_chat):
    session = ops.ChatSession(tiny_chat, system="Be brief.", max_tokens=5)
    replies = []
    for text in ("Hello", LONG_PROMPT):
        turn = session.start_turn(text)
        result = ops.collect(CHAT, text, turn.events)
        replies.append(result.response)
    assert [m["role"] for m in session.messages] == ["user", "assistant"] * 2
    assert [m["content"] for m in session.messages[1::2]] == [r.strip() for r in replies]
    session.clear()
    assert session.messages == []


def test_interrupted_chat_reply_keeps_what_was_shown(tiny_chat):
    session = ops.ChatSession(tiny_chat, max_tokens=50)
    turn = session.start_turn(LOOP_PROMPT)
    first = next(turn.events)
    assert isinstance(first, Delta)
    turn.events.close()
    assert session.messages[-1] == {"role": "assistant", "content": first.content.strip()}


def test_base_model_chat_uses_plain_format_and_stops_at_next_user_turn(tiny_base):
    session = ops.ChatSession(tiny_base, max_tokens=3)
    turn = session.start_turn("Hello")
    assert ops.collect(BASE, "Hello", turn.events).finished.completion_tokens <= 3


# --- human rendering ---------------------------------------------------------------


def _done() -> Finished:
    return Finished("stop", 3, 4, load_s=0.1, ttft_s=0.01, decode_s=0.03)


def test_json_result_returns_reasoning_apart_from_the_response():
    events = [Delta(reasoning="Let me think."), Delta("Paris."), _done()]
    data = ops.collect(CHAT, "Capital?", events).to_dict()
    assert_valid_envelope(success_envelope("run", data))
    assert (data["response"], data["reasoning"]) == ("Paris.", "Let me think.")
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_reasoning_is_framed_apart_from_the_answer_without_control_codes():
    stream = io.StringIO()
    events = [Delta(reasoning="Thinking it over"), Delta("Paris."), _done()]
    print_reply(events, ReplyPrinter(stream, color=False))
    assert stream.getvalue() == "[reasoning]\nThinking it over\n[/reasoning]\n\nParis.\n"


def test_no_reasoning_hides_it():
    stream = io.StringIO()
    events = [Delta(reasoning="hidden"), Delta("Paris."), _done()]
    print_reply(events, ReplyPrinter(stream, color=False, show_reasoning=False))
    assert stream.getvalue() == "Paris.\n"


def test_colour_marks_reasoning_dim_only_when_enabled():
    stream = io.StringIO()
    print_reply([Delta(reasoning="hm"), Delta("ok"), _done()],
                ReplyPrinter(stream, color=True))
    assert "\033[2m" in stream.getvalue()


def test_control_characters_from_the_model_are_dropped_in_human_output():
    stream = io.StringIO()
    events = [Delta(reasoning="\x1b]0;x\x07think\x9b"),
              Delta("a\x1b[2Jb\tc\r\x08\x7fd\n"), _done()]
    print_reply(events, ReplyPrinter(stream, color=False))
    assert stream.getvalue() == "[reasoning]\n]0;xthink\n[/reasoning]\n\na[2Jb\tcd\n"


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def test_cli_sampled_control_bytes_reach_json_as_data_but_never_the_terminal(demo_env):
    # At temperature 1 the byte-level demo tokenizer samples raw control bytes (seed 1: BEL, VT...).
    args = ("run", "demo-chat", "Hi", "--temperature", "1", "--seed", "1", "--max-tokens", "40")
    as_json = run_inprocess(*args, "--json")
    assert as_json.code == 0, as_json.stderr
    response = as_json.json["data"]["response"]
    assert CONTROL.search(response)
    plain = run_inprocess(*args, "--no-stream")
    assert plain.code == 0, plain.stderr
    assert plain.stdout == CONTROL.sub("", response) + "\n"


# --- the CLI end to end --------------------------------------------------------------


@pytest.fixture(scope="module")
def env(demo_cache) -> dict[str, str]:
    return cli_env(demo_cache.hf_home)


def test_cli_json_and_plain_text_agree(env):
    as_json = run_subprocess("run", "demo-chat", LONG_PROMPT, "--max-tokens", "8", "--json",
                             env=env)
    assert as_json.code == 0, as_json.stderr
    data = as_json.json["data"]
    assert data["model"] == CHAT
    assert data["prompt"] == LONG_PROMPT
    assert data["tokens_generated"] == data["usage"]["completion_tokens"] == 8
    assert data["finish_reason"] == "length"

    plain = run_subprocess("run", "demo-chat", LONG_PROMPT, "--max-tokens", "8", "--no-stream",
                           env=env)
    assert plain.code == 0, plain.stderr
    assert plain.stdout == data["response"] + "\n"
    assert "\033" not in plain.stdout


def test_cli_reads_stdin_for_dash_and_joins_extra_text(env):
    result = run_subprocess("run", "mlxk2/demo-chat-4bit", "-", "Summarise:", "--max-tokens",
                            "3", "--json", env=env, input="Notes from the meeting.\n")
    assert result.code == 0, result.stderr
    assert result.json["data"]["prompt"] == "Notes from the meeting.\nSummarise:"


def test_cli_prompt_longer_than_the_context_gives_only_our_error(env):
    result = run_subprocess("run", "demo-chat", "-", env=env, input="line\n" * 3000)
    assert result.code == 1
    assert result.stderr.startswith("Error: Prompt has ")
    assert "context holds 2048" in result.stderr
    assert "transformers" not in result.stderr
    assert "Token indices" not in result.stderr


def test_cli_too_many_tokens_is_clamped_with_a_warning(env):
    result = run_subprocess("run", "demo-chat", LONG_PROMPT, "--max-tokens", "100000",
                            "--stop", " ", env=env)
    assert result.code == 0, result.stderr
    assert "does not fit the model's context" in result.stderr
    assert " " not in result.stdout.strip()


def test_cli_exits_cleanly_when_the_reader_goes_away(env):
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk2", "run", "demo-chat", LOOP_PROMPT, "--max-tokens", "1500"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(1)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in stderr
    assert "BrokenPipe" not in stderr


def test_cli_runs_a_workspace_model_built_by_demo(env, tmp_path: Path):
    built = run_subprocess("demo", "--random", "--path", "ws-model", "--json",
                           env=env, cwd=tmp_path)
    assert built.code == 0, built.stderr
    assert built.json["data"]["cached"] is False
    assert built.json["data"]["model"] == "./ws-model"
    result = run_subprocess("run", built.json["data"]["model"], "Hi", "--max-tokens", "4",
                            "--json", env=env, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.json["data"]["model"] == "./ws-model"


def test_interactive_chat_through_a_pty(env):
    child = pexpect.spawn(
        sys.executable, ["-m", "mlxk2", "run", "demo-chat", "--max-tokens", "1500", "--verbose"],
        env=env, encoding="utf-8", timeout=60,
    )
    try:
        child.expect_exact(">>> ")
        child.sendline("Hello! How are you?")
        child.expect(r"\[\d+ tokens, .* tok/s")
        child.expect_exact(">>> ")
        child.sendline(LOOP_PROMPT)
        child.expect_exact("leaves")
        child.sendintr()
        child.expect_exact("(reply stopped)")
        child.expect_exact(">>> ")
        child.sendline("/clear")
        child.expect_exact("(conversation cleared)")
        child.expect_exact(">>> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_chat_loop_handles_commands_and_exit(tiny_chat):
    from mlxk2.output.run import chat_loop
    from mlxk2.output.sink import Output

    lines = iter(["", "/nonsense", "Hello", "/clear", "Hi again", "/exit", "never read"])
    stdout, stderr = io.StringIO(), io.StringIO()
    session = ops.ChatSession(tiny_chat, max_tokens=4)
    code = chat_loop(session, Output(False, stdout, stderr), model_name=CHAT,
                     read_line=lambda _prompt: next(lines))
    assert code == 0
    assert "Unknown command /nonsense" in stderr.getvalue()
    assert "(conversation cleared)" in stderr.getvalue()
    assert [m["content"] for m in session.messages[::2]] == ["Hi again"]
    assert next(lines) == "never read"


def test_cli_chat_from_a_pipe_writes_only_the_replies_one_per_turn(env):
    result = run_subprocess("run", "demo-chat", "--max-tokens", "3", env=env,
                            input="Hello\nAnd again\n/exit\nnever sent\n")
    assert result.code == 0, result.stderr
    one_shot = run_subprocess("run", "demo-chat", "Hello", "--max-tokens", "3", env=env)
    replies = result.stdout.split("\n")
    assert len(replies) == 3 and replies[-1] == ""
    assert replies[0] + "\n" == one_shot.stdout
    assert ">>>" not in result.stdout + result.stderr
    assert "Hello" not in result.stdout
    assert "Chatting with" not in result.stderr


def test_terminal_chat_with_redirected_stdout_prompts_on_stderr(env, tmp_path: Path):
    replies = tmp_path / "replies.txt"
    command = f"{sys.executable} -m mlxk2 run demo-chat --max-tokens 3 > {replies}"
    child = pexpect.spawn("/bin/sh", ["-c", command], env=env, encoding="utf-8", timeout=60)
    try:
        child.expect_exact("Chatting with mlxk2/demo-chat")
        child.expect_exact(">>> ")
        child.sendline("Hello")
        child.expect_exact(">>> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    text = replies.read_text()
    assert text.count("\n") == 1
    assert ">>>" not in text and "Chatting" not in text


def test_cli_system_prompt_without_template_is_sent_as_written(demo_env, tiny_chat):
    result = run_inprocess("run", "demo-chat", "hi", "--system", "Be brief.",
                           "--no-chat-template", "--max-tokens", "2", "--json")
    assert result.code == 0, result.stderr
    expected = len(tiny_chat.tokenizer.encode("Be brief.\n\nhi"))
    assert result.json["data"]["usage"]["prompt_tokens"] == expected


@pytest.mark.parametrize(
    "option", [("--temperature", "-1"), ("--seed", "-1"), ("--seed", str(2**64)),
               ("--temperature", "nan"), ("--temperature", "inf"), ("--min-p", "nan")],
)
def test_cli_rejects_bad_sampling_values_before_loading(demo_env, option):
    result = run_inprocess("run", "demo-chat", "hi", *option, "--json")
    assert result.code == 1
    assert_valid_envelope(result.json)
    assert result.json["error"]["type"] == "ValidationError"
    assert "\n" not in result.json["error"]["message"]


def test_chat_message_too_long_for_the_context_is_refused_and_chat_goes_on(tiny_chat):
    from mlxk2.output.run import chat_loop
    from mlxk2.output.sink import Output

    lines = iter(["word " * 3000, "Hi", "/exit"])
    stderr = io.StringIO()
    session = ops.ChatSession(tiny_chat, max_tokens=2)
    code = chat_loop(session, Output(False, io.StringIO(), stderr), model_name=CHAT,
                     read_line=lambda _prompt: next(lines))
    assert code == 0
    assert "context holds 2048" in stderr.getvalue()
    assert [m["content"] for m in session.messages[::2]] == ["Hi"]
