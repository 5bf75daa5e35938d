"""Reasoning is told apart from the answer in streamed text."""

from __future__ import annotations

import pytest

from mlxk2.engine.reasoning import ReasoningParser


def parse(pieces: list[str], **kwargs: bool) -> list[tuple[str, str]]:
    """Feed pieces and merge adjacent results of the same kind."""
    parser = ReasoningParser(**kwargs)
    out: list[tuple[str, str]] = []
    for piece in [*(parser.feed(p) for p in pieces), parser.flush()]:
        for kind, text in piece:
            if out and out[-1][0] == kind:
                out[-1] = (kind, out[-1][1] + text)
            else:
                out.append((kind, text))
    return out


def split_every(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_plain_text_passes_through_unchanged():
    text = "Hello <b>world</b> a < b and <|x|>\n"
    assert parse(split_every(text, 3)) == [("content", text)]


@pytest.mark.parametrize("size", [1, 2, 5, 100])
def test_think_block_is_reasoning_and_the_rest_is_the_answer(size):
    text = "<think>\nLet me see.\n</think>\n\nParis."
    assert parse(split_every(text, size)) == [
        ("reasoning", "Let me see.\n"),
        ("content", "Paris."),
    ]


def test_template_that_preopens_think_starts_in_reasoning():
    assert parse(["I should ", "answer.</th", "ink>Yes."], start_in_reasoning=True) == [
        ("reasoning", "I should answer."),
        ("content", "Yes."),
    ]


def test_unfinished_think_block_stays_reasoning():
    assert parse(["<think>still going"]) == [("reasoning", "still going")]


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_gpt_oss_analysis_channel_is_reasoning_and_final_channel_is_answer(size):
    text = (
        "<|channel|>analysis<|message|>User greets. Reply.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Hi there!<|return|>"
    )
    assert parse(split_every(text, size)) == [
        ("reasoning", "User greets. Reply."),
        ("content", "Hi there!"),
    ]


def test_gpt_oss_commentary_channel_counts_as_answer():
    text = "<|channel|>commentary to=functions.x<|message|>{}<|end|>"
    assert parse([text]) == [("content", "{}")]


def test_a_lone_angle_bracket_at_the_end_is_released_on_flush():
    parser = ReasoningParser()
    assert parser.feed("a <") == [("content", "a ")]
    assert parser.flush() == [("content", "<")]
