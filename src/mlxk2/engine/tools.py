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
  turning the call text in a reply into :class:`~mlxk2.engine.events.ToolCall` events.
"""

from __future__ import annotations

import importlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mlxk2.engine.constraints import ConstraintSpec
from mlxk2.engine.events import ToolCall
from mlxk2.errors import ValidationError

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
    lark = (f"start: call {repeat}\n"
            f'call: "{GENERIC_START}\\n" body "\\n{GENERIC_END}"\n'
            f"body: %json {json.dumps(schema, sort_keys=True)}\n")
    return ConstraintSpec("lark", lark)


class ToolCallScanner:
    """Finds tool calls in a reply's text as it streams.

    Text outside calls passes through (a partial start marker is held back until
    it is decided); text inside a call is kept until the call ends and is then
    parsed. A call that does not parse is given back as text, so nothing the
    model wrote is lost.

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
        self._choice = choice
        self._pending = ""
        self._inside = False
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        """Take more reply text; the text that is not part of a call, and finished calls."""
        self._pending += text
        shown: list[str] = []
        found: list[ToolCall] = []
        while True:
            if not self._inside:
                at = self._pending.find(self._start)
                if at < 0:
                    keep = _partial_suffix(self._pending, self._start)
                    shown.append(self._pending[: len(self._pending) - keep])
                    self._pending = self._pending[len(self._pending) - keep:]
                    break
                shown.append(self._pending[:at])
                self._pending = self._pending[at + len(self._start):]
                self._inside = True
            if not self._end:
                break
            at = self._pending.find(self._end)
            if at < 0:
                break
            body, self._pending = self._pending[:at], self._pending[at + len(self._end):]
            self._inside = False
            calls = self._read(body)
            if calls is None:
                shown.append(self._start + body + self._end)
            found.extend(calls or [])
        return "".join(shown), found

    def flush(self) -> tuple[str, list[ToolCall]]:
        """At the end of the reply: an open call (cut short, or one without an end marker)."""
        rest, self._pending = self._pending, ""
        if not self._inside:
            return rest, []
        self._inside = False
        calls = self._read(rest)
        return (self._start + rest, []) if calls is None else ("", calls)

    def _read(self, body: str) -> list[ToolCall] | None:
        try:
            parsed = self._parse(body, self._tools)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.info("a tool call did not parse (%s); kept as text", exc)
            return None
        items = parsed if isinstance(parsed, list) else [parsed]
        calls: list[ToolCall] = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                return None
            arguments = item.get("arguments", {})
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            call_id = item.get("id") if isinstance(item.get("id"), str) else None
            calls.append(ToolCall(len(self.calls) + len(calls),
                                  call_id or f"call_{uuid.uuid4().hex[:24]}",
                                  item["name"], arguments, self._choice))
        self.calls.extend(calls)
        return calls


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that begins ``marker``."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
