"""Tables measured by what a terminal shows: colour codes, wide characters, narrow screens."""

from __future__ import annotations

import re

from mlxk2.output.format import paint, table, truncate, truncate_middle, visible_width, wrap

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _starts(line: str) -> list[int]:
    """Visible column where each two-space-separated field of a plain line begins."""
    return [m.start() for m in re.finditer(r"(?:(?<=  )|^)\S", line)]


def test_visible_width_ignores_colour_and_counts_wide_characters_twice() -> None:
    assert visible_width(paint("healthy", "green", True)) == 7
    assert visible_width("日本語") == 6
    assert visible_width("e\u0301") == 1  # e + combining acute accent
    assert visible_width("plain") == 5


def test_coloured_cells_line_up_with_the_header() -> None:
    rows = [["org/a", paint("healthy", "green", True), "x"],
            ["org/bb", paint("unhealthy", "red", True), "y"]]
    lines = [ANSI.sub("", line) for line in table(["NAME", "HEALTH", "REASON"], rows).splitlines()]
    assert _starts(lines[0]) == _starts(lines[1]) == _starts(lines[2])
    assert lines[0].index("REASON") == lines[2].rindex("y") == lines[1].rindex("x")


def test_wide_characters_line_up_with_the_header() -> None:
    lines = table(["NAME", "SIZE"], [["org/模型", "1KB"], ["org/ab", "2KB"]]).splitlines()
    positions = [visible_width(line[:line.index("KB") - 1]) for line in lines[1:]]
    assert positions[0] == positions[1] == visible_width(lines[0][:lines[0].index("SIZE")])


def test_truncate_marks_the_cut_and_respects_wide_characters() -> None:
    assert truncate("mlx-community/Qwen", 10) == "mlx-commu\u2026"
    assert truncate("short", 10) == "short"
    cut = truncate("模型模型模型", 6)
    assert visible_width(cut) <= 6 and cut.endswith("\u2026")


def test_middle_truncation_keeps_both_ends_of_a_name() -> None:
    cut = truncate_middle("mlx-community/Qwen2.5-7B-Instruct-4bit", 16)
    assert cut == "mlx-c\u2026truct-4bit"
    assert visible_width(cut) == 16
    assert truncate_middle("org/model", 16) == "org/model"


def test_wrap_breaks_at_spaces_and_splits_words_longer_than_the_column() -> None:
    assert wrap("config.json missing from snapshot", 12) == [
        "config.json", "missing from", "snapshot"]
    assert wrap("abcdefghijkl", 5) == ["abcde", "fghij", "kl"]
    assert wrap("", 5) == [""]


def test_a_table_wider_than_the_screen_truncates_and_wraps_the_named_columns() -> None:
    headers = ["NAME", "SIZE", "REASON"]
    rows = [["mlx-community/Some-Very-Long-Model-Name-Instruct-4bit", "1KB",
             "Framework GGUF not executable with MLX; convert it first"]]
    text = table(headers, rows, max_width=50, truncated=["NAME"], wrapped=["REASON"])
    lines = text.splitlines()
    assert all(visible_width(line) <= 50 for line in lines)
    assert "\u2026" in lines[1]
    reason = " ".join(line[lines[0].index("REASON"):].strip() for line in lines[1:])
    assert reason == rows[0][2]  # wrapped, nothing lost
    assert lines[2][:lines[0].index("REASON")].strip() == ""  # continuation holds only REASON


def test_a_table_that_fits_is_left_alone() -> None:
    rows = [["org/model", "1KB", "ok"]]
    assert table(["NAME", "SIZE", "REASON"], rows, max_width=200, truncated=["NAME"],
                 wrapped=["REASON"]) == table(["NAME", "SIZE", "REASON"], rows)
