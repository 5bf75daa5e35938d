"""``run`` and ``serve`` share one generation core: same prompt, same tokens, same text."""

from __future__ import annotations

from mlxk2.engine.chat import build_prompt_tokens
from mlxk2.engine.events import collect_events
from mlxk2.engine.generate import generate
from mlxk2.engine.sampling import SamplingParams
from mlxk2.ops import run as ops
from tests.fixtures.models import CHAT


def test_run_and_serve_give_identical_greedy_replies(live, tiny_chat):
    for prompt, limit in (("What is the capital of France?", 24), ("Hello! How are you?", 40)):
        messages = [{"role": "user", "content": prompt}]
        tokens = build_prompt_tokens(tiny_chat.tokenizer, messages)
        ours = collect_events(generate(tiny_chat, tokens, SamplingParams(), max_tokens=limit))
        prepared = ops.prepare_one_shot(tiny_chat, prompt, max_tokens=limit)
        model = ops.RunnableModel(None, None, tiny_chat)  # type: ignore[arg-type]
        one_shot = ops.collect(CHAT, prompt, ops.run_one_shot(model, prepared, SamplingParams()))

        served = live.client().chat.completions.create(
            model=CHAT, messages=messages, max_tokens=limit, temperature=0)
        choice = served.choices[0]
        assert choice.message.content == ours.content == one_shot.response
        assert choice.finish_reason == ours.finished.finish_reason
        assert served.usage.completion_tokens == ours.finished.completion_tokens
        assert served.usage.prompt_tokens == len(tokens)
