"""Generate text with a local model through mlx-lm.

  mlxk2 run MODEL "prompt"          one answer, streamed on a terminal
  mlxk2 run MODEL                   interactive chat (/help, /clear, /exit, Ctrl-D)
  cat notes.txt | mlxk2 run MODEL - "Summarise:"   '-' reads stdin
  mlx.launch -n 2 --backend ring -- mlxk2 run MODEL "prompt" --distributed
  mlxk2 run MODEL "…" --json-schema person.json    the reply is JSON matching the schema
  mlxk2 run MODEL "…" --tools tools.json           the model may call these tools
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mlxk2.commands import _distributed
from mlxk2.commands._common import add_engine_arguments, add_model_argument
from mlxk2.errors import ValidationError
from mlxk2.output.sink import Output

if TYPE_CHECKING:
    from mlxk2.engine.batch import ModelBatch
    from mlxk2.engine.distributed import Leader
    from mlxk2.engine.load import LoadedModel

STDIN_ARG = "-"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument(
        "prompt", nargs="*", default=[],  # a default keeps argparse from calling it required
        help="Prompt text; '-' stands for stdin. Several parts are joined by newlines. "
             "No prompt starts an interactive chat.",
    )
    gen = parser.add_argument_group("generation")
    gen.add_argument("--max-tokens", type=int, default=None,
                     help="Most tokens to generate (default: what the context leaves)")
    gen.add_argument("--temperature", type=float, default=0.0,
                     help="Sampling temperature; 0 is greedy (default: 0)")
    gen.add_argument("--top-p", type=float, default=1.0, help="Nucleus sampling (default: 1.0)")
    gen.add_argument("--top-k", type=int, default=0, help="Top-k sampling; 0 is off")
    gen.add_argument("--min-p", type=float, default=0.0, help="Min-p sampling; 0 is off")
    gen.add_argument("--repetition-penalty", type=float, default=None,
                     help="Multiplicative repetition penalty (default: none)")
    gen.add_argument("--seed", type=int, default=None, help="Random seed for reproducible runs")
    gen.add_argument("--stop", action="append", default=[], metavar="TEXT",
                     help="Stop before this text; repeat for several")
    shape = parser.add_argument_group("structured output and tools (one-shot prompts)")
    shape.add_argument("--json-schema", metavar="FILE", default=None,
                       help="The reply is JSON that validates against this JSON schema")
    shape.add_argument("--format", choices=["text", "json"], default="text",
                       help="'json': the reply is a JSON object (default: text)")
    shape.add_argument("--tools", metavar="FILE", default=None,
                       help="JSON file with an OpenAI-style list of function tools "
                            "the model may call")
    shape.add_argument("--tool-choice", default="auto", metavar="CHOICE",
                       help="auto, required, none, or a function name to force "
                            "(default: auto)")
    prompt = parser.add_argument_group("prompt")
    prompt.add_argument("--system", default=None, help="System prompt")
    prompt.add_argument("--no-chat-template", action="store_true",
                        help="Send the prompt as written, without the chat template")
    show = parser.add_argument_group("output")
    show.add_argument("--no-stream", action="store_true",
                      help="Print the whole answer at the end")
    show.add_argument("--no-reasoning", action="store_true",
                      help="Hide the model's reasoning (<think> text)")
    show.add_argument("--verbose", "-v", action="store_true",
                      help="Print the BLAS and CPU dtype, and token counts and speed "
                           "after each reply")
    add_engine_arguments(parser)
    _distributed.add_arguments(parser)


def read_prompt(parts: list[str], stdin: TextIO | None = None) -> str | None:
    """Join the prompt parts, reading stdin where ``-`` appears; None means chat."""
    if not parts:
        return None
    stream = stdin or sys.stdin
    texts = [stream.read().rstrip("\n") if part == STDIN_ARG else part for part in parts]
    return "\n".join(t for t in texts if t)


def _read_json_file(path: str, flag: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{flag} {path}: {exc}") from exc


def handle(args: argparse.Namespace, out: Output) -> int:
    # Loading runs from local files only; never reach for the Hub mid-run.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _distributed.check_arguments(args)
    leader = None
    if args.distributed:
        leader = _distributed.join(args)
        if leader is None:
            return 0  # a follower: rank 0 reads the prompt and prints the reply
        try:
            return _handle(args, out, leader)
        finally:
            leader.stop()
    return _handle(args, out, None)


def _handle(args: argparse.Namespace, out: Output, leader: Leader | None) -> int:
    from mlxk2.engine.sampling import SamplingParams
    from mlxk2.ops import run as ops
    from mlxk2.output import run as render

    prompt = read_prompt(args.prompt)
    if prompt is None and leader is not None:
        raise ValidationError("--distributed needs a prompt; interactive chat runs on one machine")
    if leader is not None and (args.cpu_dtype == "float32" or args.threads):
        raise ValidationError("--cpu-dtype float32 and --threads apply to single-machine runs; "
                              "--distributed keeps the model as stored")
    if prompt is None and out.json:
        raise ValidationError("--json needs a prompt; interactive chat is human-only")
    if prompt is not None and not prompt.strip():
        raise ValidationError("The prompt is empty")
    from mlxk2.engine.constraints import JSON_OBJECT, ConstraintSpec

    constraint = None
    if args.json_schema is not None:
        schema = _read_json_file(args.json_schema, "--json-schema")
        if not isinstance(schema, dict):
            raise ValidationError(f"--json-schema {args.json_schema}: not a JSON object")
        constraint = ConstraintSpec.json_schema(schema)
    elif args.format == "json":
        constraint = JSON_OBJECT
    tools = ops.read_tools(_read_json_file(args.tools, "--tools")) if args.tools else ()
    if prompt is None and (constraint is not None or tools):
        raise ValidationError("--json-schema, --format json and --tools need a prompt")
    choice = ops.tool_choice(args.tool_choice, tools) if tools else None
    params = SamplingParams(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
        repetition_penalty=args.repetition_penalty, seed=args.seed,
    )
    batch: ModelBatch | None = None
    if leader is None:
        model = ops.open_model(args.model, cpu_dtype=args.cpu_dtype, threads=args.threads)
        if args.verbose:
            out.warn(render.engine_line(model.loaded))
    else:
        def open_everywhere(path: Path, name: str) -> LoadedModel:
            nonlocal batch
            batch = leader.open(path, name, max_batch=1, prompt_cache=0)
            return batch.loaded

        model = ops.open_model(args.model, loader=open_everywhere)
        if args.verbose:
            from mlxk2.engine.distributed import rank_layout
            from mlxk2.engine.launch import launch_environment

            out.warn(_distributed.layout_line(rank_layout(leader, launch_environment())))
            out.warn(render.engine_line(model.loaded))
    use_template = not args.no_chat_template

    if prompt is None:
        session = ops.ChatSession(
            model.loaded, params, system=args.system, use_template=use_template,
            max_tokens=args.max_tokens, stop=tuple(args.stop),
        )
        # Stdout holds only replies unless a person at a terminal sees it: prompts
        # and the greeting appear only for terminal input, on stderr if stdout
        # is redirected; piped input gets neither.
        read_line: Callable[[str], str] = input
        prompt, prompt_stream = render.CHAT_PROMPT, out.stdout
        if not sys.stdin.isatty():
            prompt = ""
        elif out.stdout.isatty():
            import readline  # noqa: F401  (line editing and history for input())
        else:
            read_line, prompt_stream = render.stderr_input, out.stderr
        return render.chat_loop(session, out, model_name=model.name, verbose=args.verbose,
                                show_reasoning=not args.no_reasoning, read_line=read_line,
                                prompt=prompt, prompt_stream=prompt_stream)

    prepared = ops.prepare_one_shot(
        model.loaded, prompt, system=args.system, use_template=use_template,
        max_tokens=args.max_tokens, stop=args.stop, constraint=constraint, tools=tools,
        choice=choice,
    )
    budget = prepared.budget
    if budget.clamped and budget.requested is not None:
        out.warn(render.clamp_warning(budget.requested, budget.max_tokens,
                                      model.loaded.context_length))
    events = ops.run_one_shot(model, prepared, params, batch=batch)
    if out.json:
        result = ops.collect(model.name, prompt, events, structured=constraint is not None,
                             engine=ops.engine_facts(model.loaded))
        return out.success("run", result.to_dict())
    printer = render.ReplyPrinter(out.stdout, color=out.color,
                                  show_reasoning=not args.no_reasoning,
                                  buffered=args.no_stream)
    done = render.print_reply(events, printer)
    if args.verbose and done is not None:
        out.warn(render.stats_line(done))
    return 0
