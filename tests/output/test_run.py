"""The interactive chat's way out: Ctrl-C twice at the prompt, and the /help list."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator

import pexpect
import pytest

from mlxk2.ops import run as ops
from mlxk2.output import run as render
from mlxk2.output.sink import Output
from tests.fixtures.cli import cli_env
from tests.fixtures.models import CHAT


def _reader(items: list[object]) -> tuple[Callable[[str], str], Iterator[object]]:
    """``read_line`` replaying ``items``: strings are typed lines, exceptions are keys."""
    queue = iter(items)

    def read_line(_prompt: str) -> str:
        item = next(queue)
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, str)
        return item

    return read_line, queue


def _chat(tiny_chat, items: list[object]) -> tuple[int, str, Iterator[object]]:
    read_line, rest = _reader(items)
    stdout, stderr = io.StringIO(), io.StringIO()
    code = render.chat_loop(ops.ChatSession(tiny_chat, max_tokens=2),
                            Output(False, stdout, stderr), model_name=CHAT, read_line=read_line)
    return code, stderr.getvalue(), rest


def test_two_quick_ctrl_c_at_the_prompt_leave_after_a_hint(tiny_chat) -> None:
    code, stderr, rest = _chat(tiny_chat, [KeyboardInterrupt(), KeyboardInterrupt(),
                                           "never read"])
    assert code == 0
    assert stderr.count("press Ctrl-C again to leave") == 1
    assert next(rest) == "never read"


def test_ctrl_c_far_apart_or_with_a_line_between_does_not_leave(tiny_chat, monkeypatch) -> None:
    clock = iter([100.0, 100.0 + render.LEAVE_WINDOW + 0.1, 200.0, 200.5])
    monkeypatch.setattr(render.time, "monotonic", lambda: next(clock))
    code, stderr, rest = _chat(tiny_chat, [KeyboardInterrupt(), KeyboardInterrupt(),
                                           KeyboardInterrupt(), "/help",
                                           KeyboardInterrupt(), "/exit", "never read"])
    assert code == 0
    assert stderr.count("press Ctrl-C again to leave") == 4
    assert next(rest) == "never read"


def test_help_lists_every_chat_command(tiny_chat) -> None:
    code, stderr, _ = _chat(tiny_chat, ["/help", "/exit"])
    assert code == 0
    for command in ("/clear", "/exit", "/help", "Ctrl-C twice"):
        assert command in stderr
    assert "Unknown command" not in stderr


@pytest.fixture
def env(demo_cache) -> dict[str, str]:
    return cli_env(demo_cache.hf_home)


def test_ctrl_c_twice_leaves_a_real_terminal_chat(env) -> None:
    child = pexpect.spawn(sys.executable, ["-m", "mlxk2", "run", "demo-chat",
                                           "--max-tokens", "3"],
                          env=env, encoding="utf-8", timeout=60)
    try:
        child.expect_exact("/help lists the commands")
        child.expect_exact(">>> ")
        child.sendline("/help")
        child.expect_exact("/clear  forget the conversation")
        child.expect_exact(">>> ")
        child.sendintr()
        child.expect_exact("press Ctrl-C again to leave")
        child.expect_exact(">>> ")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
