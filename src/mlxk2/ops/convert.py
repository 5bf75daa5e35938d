"""``convert`` (alpha): write a transformed copy of a model into a new workspace folder.

Plan first, then execute. :func:`plan_convert` resolves the source, checks the
destination and the source's health, and reads shard headers, so every refusal
happens before anything is written. :func:`run_convert` then writes into a hidden
folder beside the destination that carries an ``*.incomplete`` marker (which makes
it unhealthy by the integrity rules), verifies the result, renames it into place
and only then drops the marker. A convert killed at any moment therefore leaves
nothing that passes ``health``; the source is only ever read. The hidden folder's
name carries the writer's process id, so the next convert to the same destination
removes what a killed one left behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlxk2.cache.config import read_config
from mlxk2.cache.files import WEIGHT_FORMATS, folder_bytes
from mlxk2.cache.integrity import check_integrity
from mlxk2.cache.layout import cache_root
from mlxk2.cache.runtime import runtime_reason
from mlxk2.cache.safetensors import SafetensorsError, read_header
from mlxk2.errors import (
    ModelIncompatibleError,
    ModelNotFoundError,
    ModelUnhealthyError,
    ValidationError,
)
from mlxk2.ops._staging import Progress, check_new_workspace, staged_folder, written_folder
from mlxk2.resolve import resolve

REPAIR_INDEX = "repair-index"
QUANTIZE = "quantize"
DTYPE = "dtype"
OPERATIONS = (REPAIR_INDEX, QUANTIZE, DTYPE)
QUANT_BITS = (2, 3, 4, 6, 8)
GROUP_SIZES = (32, 64, 128)
DTYPES = ("float16", "bfloat16", "float32")
INDEX_NAME = "model.safetensors.index.json"
MARKER = "mlxk2-convert.incomplete"

@dataclass(frozen=True)
class ConvertPlan:
    """Everything checked and decided before the first byte is written."""

    source: str
    source_dir: Path
    target: str
    target_dir: Path
    operation: str
    bits: int | None = None
    group_size: int | None = None
    dtype: str | None = None
    index: dict[str, Any] | None = None  # the rebuilt index, for repair-index


@dataclass(frozen=True)
class ConvertResult:
    """What ``convert`` reports; sizes are bytes."""

    source: str
    target: str
    operation: str
    files_written: int
    size_bytes_before: int
    size_bytes_after: int
    health: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_convert(
    source: str,
    target: str,
    operation: str,
    *,
    bits: int | None = None,
    group_size: int | None = None,
    dtype: str | None = None,
    root: Path | None = None,
) -> ConvertPlan:
    """Check a conversion without writing anything.

    Args:
        source: A model spec (cache name, ``name@hash``) or a workspace path.
        target: The destination folder: new, or empty, and outside the cache.
        operation: ``repair-index``, ``quantize`` or ``dtype``.
        bits, group_size: Quantisation width and group size (``quantize``).
        dtype: Target float dtype (``dtype``).
        root: The hub cache (default: huggingface_hub's rules).

    Returns:
        The plan to hand to :func:`run_convert`.

    Raises:
        ValidationError: Bad options, a bad destination, an already quantised source.
        ModelNotFoundError, AmbiguousMatchError: The source does not resolve.
        ModelUnhealthyError: The source's files fail the integrity rules that matter.
        ModelIncompatibleError: mlx-lm cannot load the source for this operation.
    """
    _check_options(operation, bits, group_size, dtype)
    resolved = resolve(source, root)
    if resolved.path is None:
        raise ModelNotFoundError(f"'{source}' has no snapshot to convert")
    source_dir = resolved.path
    target_dir = Path(os.path.realpath(Path(target).expanduser()))  # './new/..' is '.'
    cache = cache_root() if root is None else root
    check_new_workspace(target, target_dir, cache, "convert", source_dir=source_dir)
    plan = ConvertPlan(
        source=resolved.name,
        source_dir=source_dir,
        target=target,
        target_dir=target_dir,
        operation=operation,
        bits=bits,
        group_size=(group_size or 64) if operation == QUANTIZE else None,
        dtype=dtype,
    )
    if operation == REPAIR_INDEX:
        return ConvertPlan(**{**asdict(plan), "index": build_index(source_dir)})
    _check_loadable(plan)
    return plan


def build_index(model_dir: Path) -> dict[str, Any]:
    """A ``model.safetensors.index.json`` for the shards actually present.

    Only headers are read. Every tensor appears exactly once in ``weight_map``;
    ``metadata.total_size`` is the sum of tensor sizes, as mlx-lm writes it.

    Raises:
        ModelUnhealthyError: A shard is truncated or malformed, or two shards
            hold the same tensor.
        ValidationError: There are no safetensors files to index.
    """
    shards = sorted(
        p.name for p in model_dir.iterdir() if p.name.endswith(".safetensors") and p.is_file()
    )
    if not shards:
        raise ValidationError("No safetensors weights to index")
    weight_map: dict[str, str] = {}
    total = 0
    for shard in shards:
        try:
            header = read_header(model_dir / shard)
        except SafetensorsError as exc:
            raise ModelUnhealthyError(
                f"Truncated or malformed safetensors: {shard} ({exc.reason})"
            ) from exc
        except OSError as exc:
            raise ModelUnhealthyError(f"Unreadable files: {shard} ({exc.strerror})") from exc
        for tensor in header.tensors:
            if tensor.name in weight_map:
                raise ModelUnhealthyError(
                    f"Tensor '{tensor.name}' is in both {weight_map[tensor.name]} and {shard}"
                )
            weight_map[tensor.name] = shard
        total += header.data_bytes
    return {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}


def run_convert(plan: ConvertPlan, progress: Progress | None = None) -> ConvertResult:
    """Carry out a plan: write beside the target, verify, rename into place.

    Raises:
        ModelUnhealthyError: The converted copy fails the integrity check (nothing is kept).
        PermissionDeniedError, FilesystemError: Writing failed (nothing is kept).
    """
    report = progress or (lambda stage, done, total: None)
    before = folder_bytes(plan.source_dir, skip_hidden=True)
    with staged_folder(plan.target_dir, MARKER, "converted model") as staging:
        _WRITERS[plan.operation](plan, staging, report)
    written = written_folder(plan.target_dir)
    return ConvertResult(
        source=plan.source,
        target=plan.target,
        operation=plan.operation,
        files_written=written.files,
        size_bytes_before=before,
        size_bytes_after=written.size_bytes,
        health=written.health,
    )


def _check_options(
    operation: str, bits: int | None, group_size: int | None, dtype: str | None
) -> None:
    if operation not in OPERATIONS:
        raise ValidationError(
            f"Unknown operation '{operation}'; use one of {', '.join(OPERATIONS)}"
        )
    if (bits is not None or group_size is not None) and operation != QUANTIZE:
        raise ValidationError("--q-group-size and bit widths only apply to --quantize")
    if operation == QUANTIZE and bits not in QUANT_BITS:
        raise ValidationError(f"--quantize takes one of {', '.join(map(str, QUANT_BITS))} bits")
    if group_size is not None and group_size not in GROUP_SIZES:
        raise ValidationError(f"--q-group-size takes one of {', '.join(map(str, GROUP_SIZES))}")
    if dtype is not None and operation != DTYPE:
        raise ValidationError("A dtype only applies to --dtype")
    if operation == DTYPE and dtype not in DTYPES:
        raise ValidationError(f"--dtype takes one of {', '.join(DTYPES)}")


def _check_loadable(plan: ConvertPlan) -> None:
    """Quantize and dtype load the model with mlx-lm: it must be healthy and supported."""
    problem = check_integrity(plan.source_dir)
    if problem is not None:
        raise ModelUnhealthyError(f"Cannot convert {plan.source}: {problem}")
    config = read_config(plan.source_dir) or {}
    if plan.operation == QUANTIZE and ("quantization" in config or "quantization_config" in config):
        raise ValidationError(
            f"{plan.source} is already quantised; quantise the original float model instead"
        )
    if not any(plan.source_dir.glob("model*.safetensors")):
        raise ModelIncompatibleError(
            f"Cannot convert {plan.source}: mlx-lm needs model*.safetensors weights"
        )
    # mlx-lm also loads unconverted Hugging Face checkpoints, so only the
    # architecture matters here, not the detected framework.
    reason = runtime_reason(config, "MLX")
    if reason is not None:
        raise ModelIncompatibleError(f"Cannot convert {plan.source}: {reason}")


def _copy_files(source: Path, dest: Path, skip: Callable[[str], bool], report: Progress) -> None:
    names = [n for n in _relative_files(source) if not skip(n)]
    for done, name in enumerate(names, start=1):
        out = dest / name
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(source / name, out)
        except FileNotFoundError as exc:
            raise ModelUnhealthyError(f"Source file missing: {name}") from exc
        report("Copying files", done, len(names))


def _relative_files(folder: Path) -> Iterator[str]:
    """Files under ``folder`` (links followed), skipping hidden folders such as ``.git``."""
    for current, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            yield os.path.relpath(os.path.join(current, name), folder)


def _write_repaired(plan: ConvertPlan, dest: Path, report: Progress) -> None:
    _copy_files(plan.source_dir, dest, lambda name: name.endswith(".index.json"), report)
    (dest / INDEX_NAME).write_text(json.dumps(plan.index, indent=4) + "\n")


def _write_quantized(plan: ConvertPlan, dest: Path, report: Progress) -> None:
    from mlxk2.engine import convert as engine

    bits, group_size = plan.bits, plan.group_size
    if bits is None or group_size is None:  # plan_convert sets both for quantize plans
        raise ValidationError("--quantize needs a bit width and a group size")
    report("Loading", 0, 3)
    model, config = engine.load_lazy(plan.source_dir, plan.source)
    report("Quantising", 1, 3)
    model, config = engine.quantize(model, config, group_size, bits)
    report("Saving", 2, 3)
    _save(plan, model, config, dest, report)


def _write_cast(plan: ConvertPlan, dest: Path, report: Progress) -> None:
    from mlxk2.engine import convert as engine

    report("Loading", 0, 3)
    model, config = engine.load_lazy(plan.source_dir, plan.source)
    report("Casting", 1, 3)
    config = engine.cast(model, config, str(plan.dtype))
    report("Saving", 2, 3)
    _save(plan, model, config, dest, report)


def _save(
    plan: ConvertPlan, model: Any, config: dict[str, Any], dest: Path, report: Progress
) -> None:
    from mlxk2.engine import convert as engine

    engine.save(model, config, dest)
    report("Saving", 3, 3)

    def replaced(name: str) -> bool:
        top = "/" not in name
        return top and (
            name == "config.json"
            or name.endswith(".index.json")
            or Path(name).suffix in WEIGHT_FORMATS
        )

    _copy_files(plan.source_dir, dest, replaced, report)


_WRITERS: dict[str, Callable[[ConvertPlan, Path, Progress], None]] = {
    REPAIR_INDEX: _write_repaired,
    QUANTIZE: _write_quantized,
    DTYPE: _write_cast,
}

