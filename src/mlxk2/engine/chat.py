"""Prompt construction: the tokenizer's chat template, or a plain fallback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Stop string for the plain fallback format, so a base model does not write
#: the user's next turn itself.
PLAIN_TURN_STOP = "\nUser:"
_PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "has_chat_template", False))


def plain_chat_text(messages: list[dict[str, Any]]) -> str:
    """``User:``/``Assistant:`` transcript ending with an open assistant turn."""
    lines = [
        f"{_PLAIN_ROLES.get(m['role'], m['role'].capitalize())}: {m['content']}"
        for m in messages
    ]
    lines.append("Assistant:")
    return "\n".join(lines)


def template_reads(tokenizer: Any, variable: str) -> bool:
    """Whether the model's chat template mentions ``variable`` (``tools``…)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = " ".join(str(t) for t in template.values())
    return isinstance(template, str) and variable in template


def build_prompt_tokens(
    tokenizer: Any, messages: list[dict[str, Any]], *, use_template: bool = True,
    options: Mapping[str, Any] | None = None,
) -> list[int]:
    """Token ids for a conversation, ready for the assistant's reply.

    Args:
        tokenizer: mlx-lm's ``TokenizerWrapper``.
        messages: ``{"role", "content"}`` dicts, oldest first.
        use_template: Apply the model's chat template (with the generation
            prompt) when it has one; otherwise, or when False, fall back to the
            plain :func:`plain_chat_text` format.
        options: Extra template variables (``enable_thinking``), for templates
            that read them.
    """
    if use_template and has_chat_template(tokenizer):
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                  **(options or {})))
    return raw_prompt_tokens(tokenizer, plain_chat_text(messages))


def raw_prompt_tokens(tokenizer: Any, text: str) -> list[int]:
    """Token ids for text used as-is, with the BOS token the way mlx-lm adds it."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = bos is None or not text.startswith(bos)
    return list(tokenizer.encode(text, add_special_tokens=add_special))


def opens_reasoning(tokenizer: Any, prompt_tokens: list[int]) -> bool:
    """Whether the prompt ends inside ``<think>`` (a template that pre-opens it)."""
    if not prompt_tokens:
        return False
    tail = tokenizer.decode(prompt_tokens[-8:])
    return bool(tail.rstrip().endswith("<think>"))
