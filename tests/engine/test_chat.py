"""Prompts: the chat template over a whole history, and the plain fallback."""

from __future__ import annotations

from mlxk2.engine.chat import build_prompt_tokens, plain_chat_text, raw_prompt_tokens

HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "Capital of France?"},
]


def test_chat_template_renders_every_turn_in_order_with_generation_prompt(tiny_chat):
    tokens = build_prompt_tokens(tiny_chat.tokenizer, HISTORY)
    assert tiny_chat.tokenizer.decode(tokens) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>assistant\nHi.<|im_end|>\n"
        "<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_model_without_template_gets_plain_user_assistant_format(tiny_base):
    tokens = build_prompt_tokens(tiny_base.tokenizer, HISTORY)
    assert tiny_base.tokenizer.decode(tokens) == (
        "System: Be brief.\nUser: Hello\nAssistant: Hi.\nUser: Capital of France?\nAssistant:"
    )


def test_template_can_be_switched_off(tiny_chat):
    tokens = build_prompt_tokens(tiny_chat.tokenizer, HISTORY[1:2], use_template=False)
    assert tiny_chat.tokenizer.decode(tokens) == plain_chat_text(HISTORY[1:2])


def test_raw_prompt_is_encoded_as_written(tiny_chat):
    tokens = raw_prompt_tokens(tiny_chat.tokenizer, "Tell me a story")
    assert tiny_chat.tokenizer.decode(tokens) == "Tell me a story"


def test_prompt_ending_in_an_open_think_starts_in_reasoning(tiny_chat):
    from mlxk2.engine.chat import opens_reasoning

    tokenizer = tiny_chat.tokenizer
    assert opens_reasoning(tokenizer, raw_prompt_tokens(tokenizer, "assistant\n<think>\n"))
    assert not opens_reasoning(tokenizer, raw_prompt_tokens(tokenizer, "<think>x</think>\n"))
    assert not opens_reasoning(tokenizer, [])
