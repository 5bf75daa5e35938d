"""Tool calling, once for every front door: the prompt, the grammar and the parser.

* Prompt: a chat template that takes ``tools`` (its text uses the variable, as
  ``tokenizer_config.json`` shows) gets them, with assistant ``tool_calls`` and
  ``tool`` messages passed through as it expects. Other templates get
  :data:`GENERIC_TOOL_PROMPT` as a system message, earlier tool calls written as
  ``<tool_call>`` text and tool results as user messages in ``<tool_response>``.
* Output: a model with native tool-call syntax (mlx-lm infers its parser from the
  template) is read with mlx-lm's parser for it; otherwise, and whenever a call
  is forced, the generic format ``<tool_call>\\n{"name": …, "arguments": …}\\n</tool_call>``
  is read with mlx-lm's ``json_tools`` parser.
* ``tool_choice`` ``required`` or a named function is a grammar
  (:func:`forced_call_grammar`): the reply can only be calls in the generic
  format, and each call's arguments match that function's ``parameters`` schema.
* :class:`ToolCallScanner` runs inside :class:`~mlxk2.engine.pipeline.TokenPipeline`,
  turning the call text in a reply into call events: a start with the name,
  argument pieces while they are decoded, then the whole
  :class:`~mlxk2.engine.events.ToolCall`.
"""

from __future__ import annotations

import importlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mlxk2.engine.constraints import ConstraintSpec
from mlxk2.engine.events import ToolCall, ToolCallArguments, ToolCallEvent, ToolCallStart
from mlxk2.errors import ValidationError

if TYPE_CHECKING:
    from mlxk2.engine.tool_stream import JsonCallReader

log = logging.getLogger("mlxk2.engine")


#: The generic call format's markers (also Hermes/Qwen's), read by mlx-lm's ``json_tools``.
GENERIC_PARSER = "json_tools"
GENERIC_START = "<tool_call>"
GENERIC_END = "</tool_call>"
#: Calls a forced choice may make in one reply when parallel calls are allowed; a
#: bound, so that a weak model cannot call tools until ``max_tokens``.
MAX_FORCED_CALLS = 4

#: The system text for templates that do not take tools; ``{tools}`` is the JSON list.
GENERIC_TOOL_PROMPT = (
    "You can call functions to help answer. These are the functions, as JSON:\n"
    "{tools}\n\n"
    "To call a function, reply with one line per call and nothing else:\n"
    '<tool_call>\n{{"name": "<function name>", "arguments": <JSON object of arguments>}}\n'
    "</tool_call>\n"
    "The results come back in <tool_response> messages. Answer normally when no "
    "function is needed."
)


@dataclass(frozen=True)
class ToolFunction:
    """One function a request offers; ``parameters`` is its JSON schema as JSON text."""

    name: str
    description: str = ""
    parameters: str = '{"type": "object", "properties": {}}'

    def openai(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry, the shape chat templates and parsers read."""
        function: dict[str, Any] = {"name": self.name, "parameters": json.loads(self.parameters)}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolChoice:
    """``tool_choice``: ``none``, ``auto``, ``required``, or ``function`` with its ``name``."""

    mode: Literal["none", "auto", "required", "function"] = "auto"
    name: str | None = None

    @property
    def forced(self) -> bool:
        return self.mode in ("required", "function")


@dataclass(frozen=True)
class ToolCalling:
    """How a request's tool calls are read from its text (plain data for the batch).

    ``parser`` names an mlx-lm module in ``mlx_lm.tool_parsers``; ``start`` and
    ``end`` frame a call (``end`` empty: the call runs to the end of the reply);
    ``tools`` is the OpenAI tool list as JSON, which some parsers read for types.
    """

    parser: str
    start: str
    end: str
    tools: str = "[]"


def template_takes_tools(tokenizer: Any) -> bool:
    """Whether the model's chat template reads a ``tools`` variable."""
    from mlxk2.engine.chat import template_reads

    return template_reads(tokenizer, "tools")


def _call_text(name: str, arguments: Any) -> str:
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{GENERIC_START}\n{body}\n{GENERIC_END}"


def _arguments(call: dict[str, Any]) -> Any:
    """A history tool call's arguments as an object (OpenAI sends them as JSON text)."""
    arguments = call.get("function", {}).get("arguments", {})
    if isinstance(arguments, str):
        try:
            return json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValidationError(f"A tool call's arguments are not JSON: {exc}") from exc
    return arguments


def template_messages(messages: Sequence[dict[str, Any]], tools: Sequence[ToolFunction],
                      native: bool) -> list[dict[str, Any]]:
    """Messages ready for the chat template.

    Args:
        messages: OpenAI-shaped messages: ``role`` and ``content`` text, assistant
            ``tool_calls`` (arguments as JSON text) and ``tool`` messages with
            ``tool_call_id``.
        tools: The functions on offer.
        native: The template takes tools: keep the tool turns structured (with
            the arguments as objects, as templates iterate them). Otherwise write
            them as text and put :data:`GENERIC_TOOL_PROMPT` first.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        calls = message.get("tool_calls") or []
        if native:
            entry = dict(message)
            if calls:
                entry["tool_calls"] = [
                    {**call, "function": {**call.get("function", {}),
                                          "arguments": _arguments(call)}}
                    for call in calls
                ]
            out.append(entry)
        elif message["role"] == "tool":
            out.append({"role": "user", "content":
                        f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"})
        elif calls:
            text = "\n".join(_call_text(c.get("function", {}).get("name", ""), _arguments(c))
                             for c in calls)
            content = message.get("content") or ""
            out.append({"role": "assistant", "content": f"{content}\n{text}".lstrip("\n")})
        else:
            out.append({"role": message["role"], "content": message.get("content") or ""})
    if tools and not native:
        listing = json.dumps([t.openai()["function"] for t in tools], ensure_ascii=False)
        system = GENERIC_TOOL_PROMPT.format(tools=listing)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{system}"}
        else:
            out.insert(0, {"role": "system", "content": system})
    return out


def build_tool_prompt(tokenizer: Any, messages: Sequence[dict[str, Any]],
                      tools: Sequence[ToolFunction], choice: ToolChoice,
                      options: dict[str, Any] | None = None) -> list[int]:
    """Prompt tokens for a conversation that may offer tools or hold tool turns.

    With ``tool_choice`` ``none`` the tools are left out of the prompt, but earlier
    tool turns stay. ``options`` are extra template variables (``enable_thinking``).
    """
    offered = [] if choice.mode == "none" else list(tools)
    native = template_takes_tools(tokenizer)
    if not native or not getattr(tokenizer, "has_chat_template", False):
        from mlxk2.engine.chat import build_prompt_tokens

        return build_prompt_tokens(tokenizer, template_messages(messages, offered, False),
                                   options=options)
    kwargs: dict[str, Any] = dict(options or {})
    if offered:
        kwargs["tools"] = [t.openai() for t in offered]
    return list(tokenizer.apply_chat_template(template_messages(messages, offered, True),
                                              add_generation_prompt=True, **kwargs))


def tool_calling(tokenizer: Any, tools: Sequence[ToolFunction],
                 choice: ToolChoice) -> ToolCalling | None:
    """How to read the reply's calls; None when there are no tools or the choice is ``none``."""
    if not tools or choice.mode == "none":
        return None
    listing = json.dumps([t.openai() for t in tools], ensure_ascii=False)
    native = getattr(tokenizer, "has_tool_calling", False) and template_takes_tools(tokenizer)
    if native and not choice.forced:
        module = getattr(tokenizer, "tool_parser", None)
        name = getattr(module, "__module__", "") or ""
        return ToolCalling(name.rsplit(".", 1)[-1], tokenizer.tool_call_start,
                           tokenizer.tool_call_end or "", listing)
    return ToolCalling(GENERIC_PARSER, GENERIC_START, GENERIC_END, listing)


def _call_schema(function: ToolFunction) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": function.name},
                       "arguments": json.loads(function.parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def forced_call_grammar(tools: Sequence[ToolFunction], choice: ToolChoice,
                        parallel: bool) -> ConstraintSpec | None:
    """The grammar for ``required`` (any offered function) or one named function.

    Returns:
        A Lark constraint in llguidance's dialect whose calls embed each
        function's schema; None when the choice forces nothing.

    Raises:
        ValidationError: the named function is not among ``tools``.
    """
    if not choice.forced:
        return None
    chosen = list(tools)
    if choice.mode == "function":
        chosen = [t for t in tools if t.name == choice.name]
        if not chosen:
            raise ValidationError(f"tool_choice names '{choice.name}', which is not in tools")
    from mlxk2.engine.constraints import JSON_OPTIONS, _closed_objects

    schema = _closed_objects({"anyOf": [_call_schema(t) for t in chosen]})
    schema["x-guidance"] = JSON_OPTIONS
    repeat = f'("\\n" call){{0,{MAX_FORCED_CALLS - 1}}}' if parallel else ""
    # llguidance writes properties in the schema's order: "name" before "arguments",
    # so that a streamed call's name is known before its arguments arrive.
    lark = (f"start: call {repeat}\n"
            f'call: "{GENERIC_START}\\n" body "\\n{GENERIC_END}"\n'
            f"body: %json {json.dumps(schema)}\n")
    return ConstraintSpec("lark", lark)


@dataclass
class _OpenCall:
    """A call whose start has been streamed: its index, id, name and the arguments sent."""

    index: int
    id: str
    name: str
    sent: str = ""


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class ToolCallScanner:
    """Finds tool calls in a reply's text as it streams.

    Text outside calls passes through (a partial start marker is held back until
    it is decided). A call's text is parsed when the call ends; in the generic
    JSON format (mlx-lm's ``json_tools``: forced calls and Hermes-style models)
    it is also read while it grows (:class:`~mlxk2.engine.tool_stream.JsonCallReader`),
    so each call's start, with its name, and its arguments come out in pieces
    as they are decoded. Other parsers read only whole calls, so their calls come
    out whole at the end. A call that does not parse is given back as text, so
    nothing the model wrote is lost.

    Args:
        calling: The markers and parser.
        choice: The choice index stamped on the calls.
    """

    def __init__(self, calling: ToolCalling, choice: int = 0) -> None:
        module = importlib.import_module(f"mlx_lm.tool_parsers.{calling.parser}")
        self._parse: Callable[[str, Any], Any] = module.parse_tool_call
        self._tools = json.loads(calling.tools)
        self._start = calling.start
        self._end = calling.end
        self._streams = calling.parser == GENERIC_PARSER
        self._choice = choice
        self._pending = ""
        self._inside = False
        self._reader: JsonCallReader | None = None
        self._read = 0  # how much of the open call's text the reader has had
        self._streaming: _OpenCall | None = None  # the open call's streamed start
        self._next_index = 0
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> list[str | ToolCallEvent]:
        """Take more reply text.

        Returns:
            In order, the text that is not part of a call and the call events.
        """
        self._pending += text
        out: list[str | ToolCallEvent] = []
        while True:
            if not self._inside:
                at = self._pending.find(self._start)
                if at < 0:
                    keep = _partial_suffix(self._pending, self._start)
                    out.append(self._pending[: len(self._pending) - keep])
                    self._pending = self._pending[len(self._pending) - keep:]
                    break
                out.append(self._pending[:at])
                self._pending = self._pending[at + len(self._start):]
                self._begin()
            if not self._end:
                out.extend(self._progress(self._pending))
                break
            at = self._pending.find(self._end)
            if at < 0:
                keep = _partial_suffix(self._pending, self._end)
                out.extend(self._progress(self._pending[: len(self._pending) - keep]))
                break
            body, self._pending = self._pending[:at], self._pending[at + len(self._end):]
            out.extend(self._progress(body))
            out.extend(self._complete(body, self._start + body + self._end))
        return [part for part in out if part != ""]

    def flush(self) -> list[str | ToolCallEvent]:
        """At the end of the reply: held-back text, or an open call (cut short, or one
        without an end marker), as :meth:`feed` reports them."""
        rest, self._pending = self._pending, ""
        if not self._inside:
            return [rest] if rest else []
        out: list[str | ToolCallEvent] = list(self._progress(rest))
        out.extend(self._complete(rest, self._start + rest))
        return out

    def _begin(self) -> None:
        from mlxk2.engine.tool_stream import JsonCallReader

        self._inside = True
        self._reader = JsonCallReader() if self._streams else None
        self._read = 0
        self._streaming = None

    def _progress(self, body: str) -> list[ToolCallEvent]:
        """Starts and argument pieces for what the open call's text now shows."""
        if self._reader is None:
            return []
        self._reader.feed(body[self._read:])
        self._read = len(body)
        # Only a body's first call streams: the calls of a list all end with the body,
        # and each must be whole before the next starts, for wires that keep them apart.
        progress = self._reader.calls[0] if self._reader.calls else None
        if progress is None or progress.name is None:
            return []
        events: list[ToolCallEvent] = []
        opened = self._streaming
        if opened is None:
            opened = _OpenCall(self._next_index, progress.id or _new_call_id(), progress.name)
            self._streaming = opened
            self._next_index += 1
            events.append(ToolCallStart(opened.index, opened.id, opened.name, self._choice))
        piece = progress.arguments[len(opened.sent):]
        if piece:
            opened.sent = progress.arguments
            events.append(ToolCallArguments(opened.index, piece, self._choice))
        return events

    def _complete(self, body: str, as_text: str) -> list[str | ToolCallEvent]:
        """The call's end: parse its text; the rest of each call, or the text given back."""
        opened, self._streaming, self._reader, self._inside = self._streaming, None, None, False
        items = self._parsed(body)
        if items is None:
            if opened is not None:
                log.info("a streamed tool call did not parse; its text is kept as content")
            return [as_text]
        events: list[str | ToolCallEvent] = []
        for k, (name, arguments, model_id) in enumerate(items):
            if k == 0 and opened is not None and opened.name == name:
                index, call_id, sent = opened.index, opened.id, opened.sent
                if not arguments.startswith(sent):
                    log.warning("streamed arguments %r differ from the parsed call's %r",
                                sent, arguments)
                    sent = arguments
            else:
                index, call_id, sent = self._next_index, model_id or _new_call_id(), ""
                self._next_index += 1
                events.append(ToolCallStart(index, call_id, name, self._choice))
            if arguments[len(sent):]:
                events.append(ToolCallArguments(index, arguments[len(sent):], self._choice))
            call = ToolCall(index, call_id, name, arguments, self._choice)
            self.calls.append(call)
            events.append(call)
        return events

    def _parsed(self, body: str) -> list[tuple[str, str, str | None]] | None:
        """Each call's name, arguments as JSON text, and the model's id for it, if any."""
        try:
            parsed = self._parse(body, self._tools)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.info("a tool call did not parse (%s); kept as text", exc)
            return None
        items = parsed if isinstance(parsed, list) else [parsed]
        calls: list[tuple[str, str, str | None]] = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                return None
            arguments = item.get("arguments", {})
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            call_id = item.get("id") if isinstance(item.get("id"), str) else None
            calls.append((item["name"], arguments, call_id))
        return calls


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that begins ``marker``."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
