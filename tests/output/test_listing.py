"""The human ``list`` table on a colour terminal, a narrow one, and with ``--health``."""

from __future__ import annotations

import io
import re
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pexpect

from mlxk2.ops.list import ListResult, list_models
from mlxk2.output.format import visible_width
from mlxk2.output.listing import render_list
from mlxk2.output.sink import Output
from tests.fixtures.cache import BuiltCache, build_cache
from tests.fixtures.cache_cases import CASES
from tests.fixtures.cli import cli_env, run_inprocess

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _colour_output(width: int | None) -> Output:
    out = Output(False, io.StringIO(), io.StringIO())
    out.color, out.width = True, width  # a colour terminal of a fixed size
    return out


def _rendered(out: Output, **flags: bool) -> list[str]:
    # Ages shown relative to now: every row modified just now keeps the widths fixed.
    now = datetime.now(timezone.utc).timestamp()
    models = tuple(replace(m, last_modified=now) for m in list_models(None))
    return render_list(ListResult(models), out, **flags).splitlines()


def _header_starts(header: str) -> list[int]:
    return [m.start() for m in re.finditer(r"\S+", header)]


def test_colour_table_header_lines_up_with_its_rows(cache_env: BuiltCache) -> None:
    lines = _rendered(_colour_output(None), show_all=True)
    assert any("\033[" in line for line in lines)
    header = lines[0]
    health_column = header.index("HEALTH")
    reason_column = header.index("REASON")
    for line in lines[1:]:
        plain = ANSI.sub("", line)
        if plain.startswith("("):
            continue
        assert re.match(r"(unhealthy|healthy\*?)\b", plain[health_column:]), plain
        if len(plain) > reason_column:  # rows without a reason end at HEALTH
            assert plain[reason_column - 2:reason_column] == "  ", plain
            assert plain[reason_column] != " ", plain


def test_on_a_60_column_colour_terminal_no_row_is_wider_than_the_screen(
        cache_env: BuiltCache) -> None:
    lines = _rendered(_colour_output(60), show_all=True)
    assert all(visible_width(line) <= 60 for line in lines)
    assert any("\u2026" in line for line in lines)  # long names are cut, visibly
    assert "REASON" not in lines[0]  # too narrow for the column: reasons go under their row
    gguf = next(i for i, line in enumerate(lines) if line.startswith("The"))
    assert ANSI.sub("", lines[gguf + 1]).startswith("    Framework GGUF not executable")


def test_a_medium_terminal_wraps_reasons_in_their_column(cache_env: BuiltCache) -> None:
    lines = _rendered(_colour_output(100), show_all=True)
    assert all(visible_width(line) <= 100 for line in lines)
    reason_column = lines[0].index("REASON")
    plain = [ANSI.sub("", line) for line in lines]
    gguf = next(i for i, line in enumerate(plain) if line.startswith(CASES["gguf"].repo_id))
    parts = [plain[gguf][reason_column:]]
    for line in plain[gguf + 1:]:
        if line[:reason_column].strip():
            break
        parts.append(line[reason_column:])
    assert len(parts) > 1  # wrapped onto continuation lines
    assert CASES["gguf"].reason in " ".join(parts)


def test_narrow_terminal_through_a_real_pty(hf_cache: Path) -> None:
    build_cache(hf_cache, ["chat", "gguf", "config_missing"])  # fresh: ages read "just now"
    env = cli_env(hf_cache.parent, HF_HUB_CACHE=str(hf_cache), COLUMNS="60")
    del env["NO_COLOR"]
    env["TERM"] = "xterm"
    child = pexpect.spawn(sys.executable, ["-m", "mlxk2", "list", "--all"], env=env,
                          encoding="utf-8", timeout=60, dimensions=(50, 60))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    lines = [ANSI.sub("", line) for line in child.before.splitlines()]
    assert "\033[" in child.before
    assert lines[0].startswith("NAME")
    assert all(visible_width(line) <= 60 for line in lines)


def test_health_flag_shows_the_unhealthy_models_with_their_reasons(
        cache_env: BuiltCache) -> None:
    result = run_inprocess("list", "--health")
    assert result.code == 0
    assert CASES["gguf"].repo_id in result.stdout
    assert "Framework GGUF not executable" in result.stdout
    assert "config.json missing" in result.stdout
    assert "use --all" not in result.stdout
    assert result.stdout.splitlines()[0].split()[-1] == "REASON"
