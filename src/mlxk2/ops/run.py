"""``run``: check that a model can generate text, load it, and talk to it.

Nothing here prints or reads input: one-shot prompts and chat turns are event
streams (see :mod:`mlxk2.engine.generate`) that the command layer renders.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxk2.cache.capabilities import Capability
from mlxk2.cache.inspect import ModelInfo, require_usable
from mlxk2.cache.layout import ResolvedModel
from mlxk2.engine.batch import ModelBatch
from mlxk2.engine.chat import (
    PLAIN_TURN_STOP,
    build_prompt_tokens,
    has_chat_template,
    raw_prompt_tokens,
)
from mlxk2.engine.constraints import ConstraintSpec
from mlxk2.engine.events import Delta, Event, Finished, ToolCall, collect_events
from mlxk2.engine.generate import TokenBudget, generate, plan_max_tokens
from mlxk2.engine.load import LoadedModel, load_model
from mlxk2.engine.sampling import SamplingParams
from mlxk2.engine.tools import ToolCalling, ToolChoice, ToolFunction
from mlxk2.errors import ValidationError
from mlxk2.resolve import resolve

#: Finished turns whose KV cache a chat keeps: the last one, which the next turn extends.
CHAT_PROMPT_CACHE = 1


@dataclass(frozen=True)
class RunnableModel:
    """A resolved model that passed the checks, and its loaded weights."""

    resolved: ResolvedModel
    info: ModelInfo
    loaded: LoadedModel

    @property
    def name(self) -> str:
        return self.resolved.name


def check_runnable(spec: str, root: Path | None = None) -> tuple[ResolvedModel, ModelInfo]:
    """Resolve ``spec`` and refuse, with the reason ``list`` shows, what cannot generate.

    Raises:
        ModelNotFoundError, AmbiguousMatchError, ValidationError: from resolution.
        ModelUnhealthyError: the files fail the integrity check.
        ModelIncompatibleError: an embedding model, a non-MLX framework or an
            architecture the installed mlx-lm does not support.
    """
    resolved = resolve(spec, root)
    info, _ = require_usable(resolved, Capability.TEXT_GENERATION)
    return resolved, info


def open_model(
    spec: str,
    root: Path | None = None,
    loader: Callable[..., LoadedModel] | None = None,
    *,
    cpu_dtype: str = "native",
    threads: int | None = None,
) -> RunnableModel:
    """:func:`check_runnable`, then load the local snapshot or workspace folder.

    ``loader`` is called as ``loader(path, name=...)``; the name is the one the
    user knows, for its error messages. Without one, :func:`load_model` loads with
    ``cpu_dtype`` and ``threads`` (see there).
    """
    resolved, info = check_runnable(spec, root)
    assert resolved.path is not None
    if loader is None:
        loader = functools.partial(load_model, cpu_dtype=cpu_dtype, threads=threads)
    return RunnableModel(resolved, info, loader(resolved.path, name=resolved.name))


def engine_facts(loaded: LoadedModel) -> dict[str, Any]:
    """The CPU dtype the model computes in, the policy that chose it, and the BLAS."""
    facts: dict[str, Any] = {}
    if loaded.cpu_dtype is not None:
        facts["cpu_dtype"] = loaded.cpu_dtype.dtype
        facts["cpu_dtype_policy"] = loaded.cpu_dtype.policy
    if loaded.blas is not None:
        facts["blas"] = loaded.blas.backend
    return facts


@dataclass(frozen=True)
class PreparedPrompt:
    """Prompt tokens with the token budget and stop strings that go with them.

    ``constraint`` is the grammar the reply must match and ``tools`` how its
    tool calls are read.
    """

    tokens: list[int]
    budget: TokenBudget
    stop: tuple[str, ...]
    constraint: ConstraintSpec | None = None
    tools: ToolCalling | None = None


def read_tools(document: object) -> tuple[ToolFunction, ...]:
    """Functions from an OpenAI ``tools`` list (or an object holding one under ``tools``).

    Raises:
        ValidationError: the document is not such a list.
    """
    if isinstance(document, dict):
        document = document.get("tools")
    if not isinstance(document, list):
        raise ValidationError("The tools file must hold a JSON list of tools")
    functions = []
    for tool in document:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" \
                or not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValidationError("Each tool must be {\"type\": \"function\", "
                                  "\"function\": {\"name\": ...}}")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        functions.append(ToolFunction(function["name"], str(function.get("description") or ""),
                                      json.dumps(parameters)))
    return tuple(functions)


def tool_choice(text: str, tools: Sequence[ToolFunction]) -> ToolChoice:
    """``--tool-choice``: ``auto``, ``required``, ``none`` or a function's name.

    Raises:
        ValidationError: a name that is not among ``tools``.
    """
    if text in ("auto", "required", "none"):
        return ToolChoice(text)  # type: ignore[arg-type]
    if text not in {t.name for t in tools}:
        raise ValidationError(f"--tool-choice {text!r} is not a tool in the tools file")
    return ToolChoice("function", text)


def prepare_one_shot(
    loaded: LoadedModel,
    prompt: str,
    *,
    system: str | None = None,
    use_template: bool = True,
    max_tokens: int | None = None,
    stop: Sequence[str] = (),
    constraint: ConstraintSpec | None = None,
    tools: Sequence[ToolFunction] = (),
    choice: ToolChoice | None = None,
) -> PreparedPrompt:
    """Tokens for a single prompt.

    Chat models get their template; a model without one, or ``use_template``
    False, gets the prompt as written (after the system text, if any). Tools
    go into the prompt as :mod:`mlxk2.engine.tools` decides, the same way the
    server puts them; a forced ``choice`` is a grammar and takes the place of
    ``constraint``.

    Raises:
        ValidationError: the prompt fills the context, or tools without a chat model.
        ConstraintError: a grammar that does not compile.
    """
    from mlxk2.engine.constraints import compiler_for
    from mlxk2.engine.tools import build_tool_prompt, forced_call_grammar, tool_calling

    choice = choice or ToolChoice("auto" if tools else "none")
    templated = use_template and has_chat_template(loaded.tokenizer)
    if tools and not templated:
        raise ValidationError("Tools need a chat model and its template")
    messages = _with_system(system, [{"role": "user", "content": prompt}])
    if tools:
        tokens = build_tool_prompt(loaded.tokenizer, messages, tools, choice)
    elif templated:
        tokens = build_prompt_tokens(loaded.tokenizer, messages)
    else:
        text = f"{system}\n\n{prompt}" if system else prompt
        tokens = raw_prompt_tokens(loaded.tokenizer, text)
    budget = plan_max_tokens(loaded.context_length, len(tokens), max_tokens)
    constraint = forced_call_grammar(tools, choice, parallel=True) or constraint
    if constraint is not None:
        compiler_for(loaded).check(constraint)
    return PreparedPrompt(tokens, budget, tuple(stop), constraint,
                          tool_calling(loaded.tokenizer, tools, choice))


def _with_system(system: str | None, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + messages


@dataclass
class Turn:
    """One chat reply in progress: its budget, and the events to read."""

    budget: TokenBudget
    events: Generator[Event, None, None]


@dataclass
class ChatSession:
    """A conversation that keeps its history between turns.

    Models without a chat template use the plain ``User:``/``Assistant:``
    format, with ``"\\nUser:"`` as an extra stop string. Turns run in one
    :class:`~mlxk2.engine.batch.ModelBatch`, so each turn prefills only what the
    previous one did not already hold in its prompt cache.
    """

    loaded: LoadedModel
    params: SamplingParams = field(default_factory=SamplingParams)
    system: str | None = None
    use_template: bool = True
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    messages: list[dict[str, str]] = field(default_factory=list)
    _batch: ModelBatch | None = field(default=None, init=False, repr=False)

    def clear(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self.messages.clear()

    @property
    def templated(self) -> bool:
        return self.use_template and has_chat_template(self.loaded.tokenizer)

    def start_turn(self, user_text: str) -> Turn:
        """Add the user's message and start the reply.

        The reply's answer text joins the history when the events are used up
        or closed early (an interrupted reply keeps what was shown).

        Raises:
            ValidationError: the conversation no longer fits the context.
        """
        self.messages.append({"role": "user", "content": user_text})
        conversation = _with_system(self.system, self.messages)
        tokens = build_prompt_tokens(
            self.loaded.tokenizer, conversation, use_template=self.templated
        )
        try:
            budget = plan_max_tokens(self.loaded.context_length, len(tokens), self.max_tokens)
        except ValidationError:
            self.messages.pop()
            raise
        stop = self.stop if self.templated else (*self.stop, PLAIN_TURN_STOP)
        return Turn(budget, self._reply(tokens, budget.max_tokens, stop))

    def _reply(self, tokens: list[int], max_tokens: int, stop: tuple[str, ...]
               ) -> Generator[Event, None, None]:
        answer: list[str] = []
        if self._batch is None:
            self._batch = ModelBatch(self.loaded, max_batch=1, prompt_cache=CHAT_PROMPT_CACHE)
        try:
            for event in generate(self.loaded, tokens, self.params, max_tokens=max_tokens,
                                  stop=stop, batch=self._batch):
                if isinstance(event, Delta):
                    answer.append(event.content)
                yield event
        except BaseException:
            # An interrupt may land inside a decode step; start the next turn afresh.
            self.close()
            raise
        finally:
            self.messages.append({"role": "assistant", "content": "".join(answer).strip()})

    def close(self) -> None:
        """Free the batch and its prompt cache (a later turn makes a new one)."""
        if self._batch is not None:
            self._batch.close()
            self._batch = None


@dataclass(frozen=True)
class RunResult:
    """A finished one-shot generation, as the ``run --json`` data."""

    model: str
    prompt: str
    response: str
    reasoning: str | None
    finished: Finished
    tool_calls: tuple[ToolCall, ...] = ()
    #: The response read as JSON, for a run asked for JSON (None if it was cut short).
    parsed: Any = None
    structured: bool = False
    engine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        done = self.finished
        data: dict[str, Any] = {
            "model": self.model,
            "prompt": self.prompt,
            "response": self.response,
            "tokens_generated": done.completion_tokens,
            "generation_time_s": round(done.generation_s, 4),
        }
        if self.structured:
            data["parsed"] = self.parsed
        if self.tool_calls:
            data["tool_calls"] = [
                {"id": c.id, "name": c.name, "arguments": json.loads(c.arguments)}
                for c in self.tool_calls
            ]
        if self.reasoning:
            data["reasoning"] = self.reasoning
        data["usage"] = {
            "prompt_tokens": done.prompt_tokens,
            "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens,
        }
        data["finish_reason"] = done.finish_reason
        data["timings"] = {
            "load_s": round(done.load_s, 4),
            "ttft_s": round(done.ttft_s, 4),
            "tokens_per_s": round(done.tokens_per_s, 2),
            **self.engine,
        }
        return data


def run_one_shot(
    model: RunnableModel, prepared: PreparedPrompt, params: SamplingParams,
    batch: ModelBatch | None = None,
) -> Iterator[Event]:
    """Events for one prompt prepared by :func:`prepare_one_shot`, in ``batch`` if given
    (a distributed run's replicated batch), else in a private one."""
    return generate(
        model.loaded, prepared.tokens, params,
        max_tokens=prepared.budget.max_tokens, stop=prepared.stop, batch=batch,
        constraint=prepared.constraint, tools=prepared.tools,
    )


def collect(model_name: str, prompt: str, events: Iterable[Event],
            structured: bool = False, engine: dict[str, Any] | None = None) -> RunResult:
    """Read a whole event stream into a :class:`RunResult`.

    Args:
        structured: The reply was constrained to JSON; read it into ``parsed``.
        engine: Facts reported with the timings (see :func:`engine_facts`).

    Raises:
        BaseException: the error of an aborted generation.
    """
    reply = collect_events(events)
    parsed = None
    if structured:
        try:
            parsed = json.loads(reply.content)
        except json.JSONDecodeError:
            parsed = None  # cut short by max_tokens: the finish reason says so
    return RunResult(model_name, prompt, reply.content, reply.reasoning or None, reply.finished,
                     reply.tool_calls, parsed, structured, engine or {})
