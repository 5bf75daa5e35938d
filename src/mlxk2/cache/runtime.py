"""Runtime compatibility: can the installed mlx-lm run this model?

Importing mlx_lm costs 1.5-2 s, too much for ``list``. Everything here reads the
installed package from disk instead: ``find_spec("mlx_lm")`` locates it without
importing it, the version comes from the distribution metadata, an architecture
is supported when ``models/<name>.py`` defines ``Model``, and the remapping
tables are read from ``mlx_lm/utils.py`` with :mod:`ast`. Results are cached per
package location and version.

The mapping mirrors ``mlx_lm.utils._get_classes``: first
``MODEL_ARCHITECTURE_REMAPPING[(model_type, architecture)]``, then
``MODEL_REMAPPING.get(model_type, model_type)``.
"""

from __future__ import annotations

import ast
import functools
import importlib.machinery
import importlib.util
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

_MODULE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_IMPORT_ERRORS = frozenset({"ImportError", "ModuleNotFoundError"})


@dataclass(frozen=True)
class MlxLm:
    """What the installed mlx-lm offers, read without importing it."""

    version: str
    package_dir: Path
    model_remapping: Mapping[str, str]
    architecture_remapping: Mapping[tuple[str, str], str]

    def module_for(self, config: Mapping[str, Any]) -> str | None:
        """The ``mlx_lm.models`` module name mlx-lm would load for ``config``."""
        model_type = config.get("model_type")
        if not isinstance(model_type, str) or not model_type:
            return None
        architectures = config.get("architectures") or ()
        if isinstance(architectures, str):
            architectures = (architectures,)
        if isinstance(architectures, Sequence):
            for architecture in architectures:
                if not isinstance(architecture, str):
                    continue
                remapped = self.architecture_remapping.get((model_type, architecture))
                if remapped is not None:
                    return remapped
        return self.model_remapping.get(model_type, model_type)

    def architecture_problem(self, module: str) -> str | None:
        """Why ``mlx_lm.models.<module>`` cannot be loaded (a predicate phrase), or None."""
        if not _MODULE_NAME.match(module):
            return f"is not supported by mlx-lm {self.version}"
        return _module_problem(self.package_dir / "models" / f"{module}.py", self.version)


def find_mlx_lm(search_path: list[str] | None = None) -> MlxLm | None:
    """Locate mlx-lm without importing it.

    Args:
        search_path: Folders to look in instead of the interpreter's import path
            (tests point this at a fake or empty folder).

    Returns:
        The package facts, or None when mlx-lm is not installed. Looked up once
        per process and search path: installed packages do not change mid-run.
    """
    return _find(None if search_path is None else tuple(search_path))


@functools.lru_cache(maxsize=8)
def _find(search_path: tuple[str, ...] | None) -> MlxLm | None:
    if search_path is None:
        try:
            spec = importlib.util.find_spec("mlx_lm")
        except (ImportError, ValueError):
            return None
    else:
        spec = importlib.machinery.PathFinder.find_spec("mlx_lm", list(search_path))
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    return _load(package_dir, _version(search_path))


def runtime_reason(
    config: Mapping[str, Any],
    framework: str,
    *,
    search_path: list[str] | None = None,
) -> str | None:
    """Return why mlx-lm cannot run a (healthy) model, or None if it can.

    Args:
        config: The model's parsed ``config.json`` (may be empty).
        framework: ``"MLX"``, ``"GGUF"``, ``"PyTorch"`` or ``"Unknown"``.
        search_path: See :func:`find_mlx_lm`.

    Returns:
        The spec's reason string, or None when the model is runtime compatible.
        Embedding models (bert, t5...) are not mlx-lm text architectures; callers
        judge them by their own rule instead of asking here.
    """
    if framework != "MLX":
        reason = f"Framework {framework} not executable with mlx-lm (requires MLX)"
        return reason + "; convert it with 'mlxk2 import'" if framework == "GGUF" else reason
    mlx_lm = find_mlx_lm(search_path)
    if mlx_lm is None:
        return "mlx-lm is not installed, so no model can run"
    module = mlx_lm.module_for(config)
    if module is None:
        return "config.json has no model_type, so mlx-lm cannot pick an architecture"
    problem = mlx_lm.architecture_problem(module)
    if problem is None:
        return None
    name = str(config["model_type"])
    mapped = f" (mapped to '{module}')" if module != name else ""
    return f"Model architecture '{name}'{mapped} {problem}"


def _version(search_path: tuple[str, ...] | None) -> str:
    import importlib.metadata  # 20 ms to import; only needed once mlx-lm is found

    if search_path is None:
        try:
            return importlib.metadata.version("mlx-lm")
        except importlib.metadata.PackageNotFoundError:
            return "unknown"
    for dist in importlib.metadata.distributions(path=list(search_path)):
        if (dist.metadata["Name"] or "").lower().replace("_", "-") == "mlx-lm":
            return dist.version
    return "unknown"


@functools.lru_cache(maxsize=8)
def _load(package_dir: Path, version: str) -> MlxLm:
    """Read the remapping tables from ``utils.py`` (cached per location and version)."""
    tables: dict[str, Any] = {}
    try:
        tree = ast.parse((package_dir / "utils.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        tree = ast.Module(body=[], type_ignores=[])
    for node in tree.body:
        target, value = _assignment(node)
        if target in {"MODEL_REMAPPING", "MODEL_ARCHITECTURE_REMAPPING"} and value is not None:
            try:
                tables[target] = ast.literal_eval(value)
            except ValueError:
                continue
    model_remapping = {
        k: v
        for k, v in dict(tables.get("MODEL_REMAPPING", {})).items()
        if isinstance(k, str) and isinstance(v, str)
    }
    architecture_remapping = {
        k: v
        for k, v in dict(tables.get("MODEL_ARCHITECTURE_REMAPPING", {})).items()
        if isinstance(k, tuple) and len(k) == 2 and isinstance(v, str)
    }
    return MlxLm(
        version=version,
        package_dir=package_dir,
        model_remapping=MappingProxyType(model_remapping),
        architecture_remapping=MappingProxyType(architecture_remapping),
    )


def _assignment(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
        if isinstance(target, ast.Name):
            return target.id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, node.value
    return None, None


@functools.lru_cache(maxsize=256)
def _module_problem(path: Path, version: str) -> str | None:
    """Check one model module: it must exist, define ``Model``, and find its hard deps.

    Some modules (``olmo``) exit the process on import when an optional package
    is missing; such a guard is a ``try: import x`` whose handler raises or exits.
    """
    unsupported = f"is not supported by mlx-lm {version}"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return unsupported
    if not any(isinstance(n, ast.ClassDef) and n.name == "Model" for n in tree.body):
        return unsupported
    for package in _guarded_imports(tree):
        if importlib.util.find_spec(package) is None:
            return f"needs the package '{package}' (not installed) to run with mlx-lm {version}"
    return None


def _guarded_imports(tree: ast.Module) -> list[str]:
    packages: list[str] = []
    for node in tree.body:
        if not isinstance(node, ast.Try) or not any(_fails_hard(h) for h in node.handlers):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.Import):
                packages.extend(alias.name.split(".")[0] for alias in stmt.names)
            elif isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
                packages.append(stmt.module.split(".")[0])
    return packages


def _fails_hard(handler: ast.ExceptHandler) -> bool:
    """An ImportError handler that raises or exits instead of falling back."""
    caught = handler.type
    names = (
        {e.id for e in caught.elts if isinstance(e, ast.Name)}
        if isinstance(caught, ast.Tuple)
        else {caught.id}
        if isinstance(caught, ast.Name)
        else set()
    )
    if not names & _IMPORT_ERRORS:
        return False
    for node in ast.walk(ast.Module(body=handler.body, type_ignores=[])):
        if isinstance(node, ast.Raise):
            return True
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "exit":
                return True
    return False
