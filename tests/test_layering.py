"""Dependencies run one way: cli -> commands -> ops/server -> engine/output -> resolve ->
cache -> errors/system. A static scan of every import (lazy ones included) keeps it so."""

from __future__ import annotations

import ast
from pathlib import Path

import mlxk2

PACKAGE = Path(mlxk2.__file__).parent

#: Higher layers may import lower ones and their own; never a higher one.
LAYERS = {
    "cli": 6, "__main__": 6, "__init__": 6,
    "commands": 5,
    "ops": 4, "server": 4,
    "engine": 3, "output": 3,
    "resolve": 2,
    "cache": 1,
    "errors": 0, "system": 0,
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Imports under ``if TYPE_CHECKING:`` only name types; they create no runtime arrow."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_lines(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if node.lineno in skipped:
            continue
        found.extend((node.lineno, n) for n in names if n.split(".")[0] == "mlxk2")
    return found


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts)


def test_every_module_belongs_to_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert _layer(_module_name(path)) in LAYERS, path


def test_no_import_points_to_a_higher_layer() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _layer(_module_name(path))
        for line, target in _imports(path):
            if target == "mlxk2":
                continue
            if LAYERS[_layer(target)] > LAYERS[source]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert upward == []


def test_the_scan_sees_lazy_imports_and_ignores_type_only_ones(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from mlxk2.ops.list import ListResult\n"
        "def f():\n"
        "    from mlxk2.resolve import resolve\n"
    )
    assert _imports(sample) == [(5, "mlxk2.resolve")]
