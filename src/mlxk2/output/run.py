"""Human output for ``run``: streamed replies, reasoning marking, and the chat loop.

Model text is untrusted: a sampled reply can hold any byte, ESC included, and
written raw it would drive the terminal (escape-sequence injection). The human
renderer therefore drops control characters from model text, on a TTY and in
pipes alike. ``--json`` keeps the text exactly as generated: it is data there,
and JSON writes C0 controls as ``\\u00XX`` escapes.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TextIO

from mlxk2.engine.events import Aborted, Delta, Event, Finished, ToolCall
from mlxk2.errors import ValidationError
from mlxk2.output.format import paint
from mlxk2.output.sink import Output

if TYPE_CHECKING:
    from mlxk2.engine.load import LoadedModel
    from mlxk2.ops.run import ChatSession

#: C0 controls except tab and newline, DEL, and the C1 range: removed from model text.
_CONTROL_CHARS = dict.fromkeys(
    [c for c in range(0x20) if chr(c) not in "\t\n"] + [0x7F, *range(0x80, 0xA0)]
)

REASONING_OPEN = "[reasoning]"
REASONING_CLOSE = "[/reasoning]"
TOOL_CALL = "[tool call]"
CHAT_PROMPT = ">>> "
CHAT_HELP = "Type a message. /help lists the commands; /exit, Ctrl-D or Ctrl-C twice leaves."
CHAT_COMMANDS = """\
/clear  forget the conversation and start a new one
/exit   leave (also /quit, /bye, Ctrl-D, or Ctrl-C twice at the prompt)
/help   show this list
Ctrl-C while a reply streams stops the reply."""
#: Seconds within which a second Ctrl-C at the prompt leaves, as in Node's REPL and Ollama.
LEAVE_WINDOW = 2.0


def strip_controls(text: str) -> str:
    """``text`` without the control characters a terminal would act on (keeps \\t, \\n)."""
    return text.translate(_CONTROL_CHARS)


class ReplyPrinter:
    """Write one reply's chunks as they arrive (or all at the end).

    Reasoning is framed by ``[reasoning]`` … ``[/reasoning]`` (dim when colour
    is on) or left out entirely; without colour no control codes are written.
    Control characters in the model's text are dropped (:func:`strip_controls`).
    """

    def __init__(self, stream: TextIO, *, color: bool, show_reasoning: bool = True,
                 buffered: bool = False) -> None:
        self._stream = stream
        self._color = color
        self._show_reasoning = show_reasoning
        self._buffered = buffered
        self._parts: list[str] = []
        self._in_reasoning = False
        self._wrote = False
        self._last = ""

    def chunk(self, event: Delta) -> None:
        """Write a delta: its reasoning (framed), then its answer text."""
        if event.reasoning and self._show_reasoning:
            if not self._in_reasoning:
                self._write(paint(REASONING_OPEN, "dim", self._color) + "\n")
                self._in_reasoning = True
            self._write(paint(strip_controls(event.reasoning), "dim", self._color))
        if event.content:
            self._close_reasoning()
            self._write(strip_controls(event.content))

    def tool_call(self, call: ToolCall) -> None:
        """Write a tool call on a line of its own: ``[tool call] name {arguments}``."""
        self._close_reasoning()
        newline = "" if not self._wrote or self._last.endswith("\n") else "\n"
        line = f"{TOOL_CALL} {call.name} {call.arguments}"
        self._write(newline + paint(strip_controls(line), "bold", self._color) + "\n")

    @property
    def wrote(self) -> bool:
        """Whether any text (reply, reasoning or its frame) has been written."""
        return self._wrote

    def finish(self) -> None:
        """End the reply with a newline and flush anything buffered."""
        self._close_reasoning()
        if self._wrote and not self._last.endswith("\n"):
            self._write("\n")
        if self._buffered:
            self._stream.write("".join(self._parts))
            self._parts.clear()
        self._stream.flush()

    def _close_reasoning(self) -> None:
        if self._in_reasoning:
            newline = "" if self._last.endswith("\n") else "\n"
            self._write(newline + paint(REASONING_CLOSE, "dim", self._color) + "\n\n")
            self._in_reasoning = False

    def _write(self, text: str) -> None:
        if not text:
            return
        self._wrote = True
        self._last = text
        if self._buffered:
            self._parts.append(text)
        else:
            self._stream.write(text)
            self._stream.flush()


def print_reply(events: Iterable[Event], printer: ReplyPrinter) -> Finished | None:
    """Feed every event to ``printer``; return the final :class:`Finished`.

    A tool call is written whole once it completes; its streamed pieces are not shown.

    Raises:
        BaseException: the error of an aborted generation (after what was written).
    """
    finished = None
    for event in events:
        if isinstance(event, Delta):
            printer.chunk(event)
        elif isinstance(event, ToolCall):
            printer.tool_call(event)
        elif isinstance(event, Aborted):
            printer.finish()
            raise event.error
        elif isinstance(event, Finished):
            finished = event
    printer.finish()
    return finished


def stats_line(done: Finished) -> str:
    """``--verbose`` summary of one reply."""
    return (
        f"[{done.completion_tokens} tokens, {done.tokens_per_s:.1f} tok/s, "
        f"first token {done.ttft_s * 1000:.0f} ms, {done.finish_reason}]"
    )


def engine_line(loaded: LoadedModel) -> str:
    """``--verbose`` line after loading: the BLAS and the dtype the model computes in."""
    parts = []
    blas = loaded.blas
    if blas is not None:
        text = f"BLAS: {blas.backend}"
        if blas.backend == "openblas":
            text += f" {blas.version}, {blas.threads} thread{'' if blas.threads == 1 else 's'}"
        elif blas.reason:
            text += f" ({blas.reason})"
        parts.append(text)
    choice = loaded.cpu_dtype
    if choice is not None:
        text = f"dtype: {choice.dtype}"
        if choice.converted:
            text += f" (from {choice.stored})"
        parts.append(f"{text}, --cpu-dtype {choice.policy}: {choice.reason}")
    return f"[{'; '.join(parts)}]" if parts else ""


def clamp_warning(requested: int, allowed: int, context: int | None) -> str:
    return (
        f"Warning: --max-tokens {requested} does not fit the model's context "
        f"({context} tokens with the prompt); using {allowed}."
    )


def stderr_input(prompt: str) -> str:
    """``input`` showing its prompt on stderr, for a terminal user whose stdout is redirected."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def chat_loop(
    session: ChatSession,
    out: Output,
    *,
    model_name: str,
    verbose: bool = False,
    show_reasoning: bool = True,
    read_line: Callable[[str], str] = input,
    prompt: str = CHAT_PROMPT,
    prompt_stream: TextIO | None = None,
) -> int:
    """Interactive chat until ``/exit`` or end of input.

    Ctrl-C while a reply streams stops that reply and returns to the prompt;
    Ctrl-C at the prompt clears the line, and a second one within
    :data:`LEAVE_WINDOW` seconds leaves. Stdout gets each reply and a newline,
    one per turn, so with an empty ``prompt`` (input from a pipe: no greeting,
    no prompts) it holds nothing else.

    Args:
        session: The conversation; its replies are generated here.
        out: The invocation's sink; replies go to its stdout, notes to stderr.
        model_name: Shown in the greeting.
        verbose: Print token statistics after each reply.
        show_reasoning: Show reasoning text framed, or hide it.
        read_line: Reads one line after showing a prompt (``input`` by default).
        prompt: Shown before each line; empty for piped input, which also drops
            the greeting.
        prompt_stream: Where ``read_line`` shows the prompt (default: stdout), for
            the line break after Ctrl-C or Ctrl-D.
    """
    decor = prompt_stream or out.stdout
    if prompt:
        out.warn(f"Chatting with {model_name}. {CHAT_HELP}")
    interrupted_at: float | None = None
    while True:
        try:
            line = read_line(prompt)
        except (EOFError, KeyboardInterrupt) as exc:
            if prompt:
                decor.write("\n")
                decor.flush()
            if isinstance(exc, EOFError):
                return 0
            now = time.monotonic()
            if interrupted_at is not None and now - interrupted_at < LEAVE_WINDOW:
                return 0
            interrupted_at = now
            out.warn("(press Ctrl-C again to leave, or type /exit)")
            continue
        interrupted_at = None
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            return 0
        if text == "/help":
            out.warn(CHAT_COMMANDS)
            continue
        if text == "/clear":
            session.clear()
            out.warn("(conversation cleared)")
            continue
        if text.startswith("/") and " " not in text:
            out.warn(f"Unknown command {text}. {CHAT_HELP}")
            continue
        _chat_turn(session, out, text, verbose=verbose, show_reasoning=show_reasoning)


def _chat_turn(session: ChatSession, out: Output, text: str, *, verbose: bool,
               show_reasoning: bool) -> None:
    try:
        turn = session.start_turn(text)
    except ValidationError as exc:
        out.warn(f"{exc.message}. /clear starts a new conversation.")
        return
    if turn.budget.clamped and turn.budget.requested is not None:
        out.warn(clamp_warning(turn.budget.requested, turn.budget.max_tokens,
                               session.loaded.context_length))
    printer = ReplyPrinter(out.stdout, color=out.color, show_reasoning=show_reasoning)
    try:
        done = print_reply(turn.events, printer)
    except KeyboardInterrupt:
        with contextlib.suppress(KeyboardInterrupt):
            turn.events.close()
        printer.finish()
        out.warn("(reply stopped)")
        return
    finally:
        if not printer.wrote:  # an empty reply still takes its line
            out.stdout.write("\n")
            out.stdout.flush()
    if verbose and done is not None:
        out.warn(stats_line(done))
