"""``import``: turn a GGUF model (a file, a cached GGUF repo, or an Ollama model)
into an MLX workspace folder that every other command accepts.

Plan first, then execute. :func:`plan_import` finds the GGUF file, parses its
header and refuses whatever cannot be converted (architecture, tensor types,
tokenizer, a truncated file, a non-empty destination) before anything is
written. :func:`run_import` then writes into a hidden staging folder with an
``*.incomplete`` marker, checks that mlx-lm loads the result and that it is
healthy, and renames it into place. A killed import leaves nothing that passes
``health``; the source is only ever read, and nothing is written into the
Hugging Face cache.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlxk2.cache.layout import cache_root
from mlxk2.errors import ModelIncompatibleError, ModelNotFoundError, ValidationError
from mlxk2.ops._staging import (
    Progress,
    check_new_workspace,
    staged_folder,
    written_folder,
)
from mlxk2.resolve import is_workspace_spec, resolve

OLLAMA_PREFIX = "ollama:"
OLLAMA_REGISTRY = "registry.ollama.ai"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
BITS = (4, 6, 8)
GROUP_SIZES = (32, 64, 128)
DTYPES = ("float16", "bfloat16", "float32")
MARKER = "mlxk2-import.incomplete"

@dataclass(frozen=True)
class ImportPlan:
    """Everything checked and decided before the first byte is written."""

    source: str
    gguf_path: Path
    target: str
    target_dir: Path
    architecture: str
    tensor_types: dict[str, int]
    bits: int | None = None
    group_size: int | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class ImportResult:
    """What ``import`` reports; sizes are bytes."""

    source: str
    gguf_file: str
    target: str
    architecture: str
    model_type: str
    lossless: bool
    tensor_types: dict[str, int]
    quantization: dict[str, Any] | None  # the commonest bits and group size, or None
    files_written: int
    size_bytes: int
    health: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_import(
    source: str,
    target: str | None = None,
    *,
    bits: int | None = None,
    group_size: int | None = None,
    dtype: str | None = None,
    root: Path | None = None,
    ollama_dir: Path | None = None,
) -> ImportPlan:
    """Check an import without writing anything.

    Args:
        source: A ``.gguf`` path, a cached model or workspace holding one GGUF
            file, or ``ollama:NAME[:TAG]``.
        target: The destination folder (new or empty, outside the cache);
            default ``./<source name>-mlx``.
        bits, group_size: Requantisation for GGUF types MLX cannot load exactly
            (K-quants, IQ types); refused for a file that has none.
        dtype: Cast floating-point tensors to ``float16``, ``bfloat16`` or ``float32``.
        root: The hub cache (default: huggingface_hub's rules).
        ollama_dir: Ollama's models folder (default: ``$OLLAMA_MODELS`` or ``~/.ollama/models``).

    Returns:
        The plan to hand to :func:`run_import`.

    Raises:
        ValidationError: Bad options, a bad destination, a folder with no or several GGUF files.
        ModelNotFoundError: The source (or Ollama tag) does not exist.
        ModelIncompatibleError: An architecture, tensor type or tokenizer that
            cannot be imported, named.
        ModelUnhealthyError: A truncated or malformed GGUF file.
    """
    from mlxk2.engine.gguf import check_importable, read_header
    from mlxk2.engine.gguf.tensors import LOSSLESS_TYPES

    _check_options(bits, group_size, dtype)
    cache = cache_root() if root is None else root
    gguf_path, default_name = _find_gguf(source, cache, ollama_dir)
    target = target or f"./{default_name}-mlx"
    target_dir = Path(os.path.realpath(Path(target).expanduser()))
    check_new_workspace(target, target_dir, cache, "import")
    header = read_header(gguf_path)
    arch = check_importable(header)
    types: dict[str, int] = {}
    for tensor in header.tensors:
        types[tensor.type_name] = types.get(tensor.type_name, 0) + 1
    if set(types) <= LOSSLESS_TYPES and (bits is not None or group_size is not None):
        raise ValidationError(
            "--bits and --group-size only apply to GGUF types MLX cannot load exactly; "
            f"every tensor here is {', '.join(sorted(types))}, kept as it is"
        )
    return ImportPlan(
        source=source,
        gguf_path=gguf_path,
        target=target,
        target_dir=target_dir,
        architecture=arch.name,
        tensor_types=dict(sorted(types.items())),
        bits=bits,
        group_size=group_size,
        dtype=dtype,
    )


def run_import(plan: ImportPlan, progress: Progress | None = None) -> ImportResult:
    """Carry out a plan: write beside the target, load-check, verify, rename into place.

    Raises:
        ModelIncompatibleError: mlx-lm cannot load the written model (nothing is kept).
        ModelUnhealthyError: The result fails the integrity check (nothing is kept).
        PermissionDeniedError, FilesystemError: Writing failed (nothing is kept).
    """
    from mlxk2.engine.gguf import read_header, write_mlx_model

    report = progress or (lambda stage, done, total: None)
    header = read_header(plan.gguf_path)
    with staged_folder(plan.target_dir, MARKER, "imported model") as staging:
        imported = write_mlx_model(header, staging, bits=plan.bits, group_size=plan.group_size,
                                   dtype=plan.dtype, progress=report)
        report("Checking with mlx-lm", 0, 1)
        _check_loads(staging)
        report("Checking with mlx-lm", 1, 1)
    written = written_folder(plan.target_dir)
    quantization = None
    if imported.quantization is not None:
        quantization = {k: imported.quantization[k] for k in ("bits", "group_size")}
    return ImportResult(
        source=plan.source,
        gguf_file=str(plan.gguf_path),
        target=plan.target,
        architecture=imported.architecture,
        model_type=imported.model_type,
        lossless=imported.lossless,
        tensor_types=imported.tensor_types,
        quantization=quantization,
        files_written=written.files,
        size_bytes=written.size_bytes,
        health=written.health,
    )


def import_gguf(
    source: str,
    target: str | None = None,
    *,
    bits: int | None = None,
    group_size: int | None = None,
    dtype: str | None = None,
    root: Path | None = None,
    ollama_dir: Path | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Plan and run an import in one call (the library entry point); see :func:`plan_import`."""
    plan = plan_import(source, target, bits=bits, group_size=group_size, dtype=dtype,
                       root=root, ollama_dir=ollama_dir)
    return run_import(plan, progress)


def ollama_models_dir() -> Path:
    """Ollama's store: ``$OLLAMA_MODELS``, else ``~/.ollama/models``."""
    configured = os.environ.get("OLLAMA_MODELS")
    return Path(configured).expanduser() if configured else Path.home() / ".ollama" / "models"


def _check_options(bits: int | None, group_size: int | None, dtype: str | None) -> None:
    if bits is not None and bits not in BITS:
        raise ValidationError(f"--bits takes one of {', '.join(map(str, BITS))}")
    if group_size is not None and group_size not in GROUP_SIZES:
        raise ValidationError(f"--group-size takes one of {', '.join(map(str, GROUP_SIZES))}")
    if dtype is not None and dtype not in DTYPES:
        raise ValidationError(f"--dtype takes one of {', '.join(DTYPES)}")


def _find_gguf(source: str, cache: Path, ollama_dir: Path | None) -> tuple[Path, str]:
    """The GGUF file a source names, and a default folder name for the result."""
    if source.startswith(OLLAMA_PREFIX):
        return _ollama_blob(source[len(OLLAMA_PREFIX):], ollama_dir or ollama_models_dir())
    candidate = Path(source).expanduser()
    if source.endswith(".gguf") or candidate.is_file():
        if not candidate.is_file():
            raise ModelNotFoundError(f"No GGUF file at '{source}'")
        return candidate, candidate.stem
    resolved = resolve(source, cache)
    if resolved.path is None:
        raise ModelNotFoundError(f"'{source}' has no snapshot to import")
    files = sorted(p for p in resolved.path.iterdir() if p.name.endswith(".gguf"))
    if not files:
        raise ValidationError(f"'{resolved.name}' has no GGUF file to import")
    if len(files) > 1:
        raise ValidationError(
            f"'{resolved.name}' holds {len(files)} GGUF files; pass one as a path: "
            + ", ".join(str(p) for p in files)
        )
    name = resolved.name if is_workspace_spec(source) else resolved.name.rsplit("/", 1)[-1]
    return files[0], Path(name).name or files[0].stem


def _ollama_blob(spec: str, models: Path) -> tuple[Path, str]:
    """``NAME[:TAG]`` to the model layer's blob, through Ollama's manifest."""
    name, _, tag = spec.partition(":")
    tag = tag or "latest"
    if not name or "/" in tag or ".." in name.split("/") or tag == "..":
        raise ValidationError(f"Invalid Ollama model name '{spec}'")
    parts = name.split("/")
    if len(parts) == 1:
        parts = [OLLAMA_REGISTRY, "library", *parts]
    elif len(parts) == 2:
        parts = [OLLAMA_REGISTRY, *parts]
    manifests = models / "manifests"
    manifest = manifests.joinpath(*parts, tag)
    if not manifest.is_file():
        tags = sorted(p.name for p in manifest.parent.iterdir()) if manifest.parent.is_dir() else []
        present = f" (tags present: {', '.join(tags)})" if tags else ""
        raise ModelNotFoundError(f"No Ollama model '{name}:{tag}' in {models}{present}")
    try:
        layers = json.loads(manifest.read_text(encoding="utf-8")).get("layers", [])
        digest = next(layer["digest"] for layer in layers
                      if layer.get("mediaType") == OLLAMA_MODEL_LAYER)
    except (OSError, ValueError, StopIteration, KeyError, TypeError, AttributeError) as exc:
        raise ModelIncompatibleError(
            f"Ollama manifest for '{name}:{tag}' names no model layer"
        ) from exc
    blob = models / "blobs" / str(digest).replace(":", "-")
    if not blob.is_file():
        raise ModelNotFoundError(f"Ollama blob {digest} for '{name}:{tag}' is missing")
    return blob, f"{parts[-1]}-{tag}"


def _check_loads(folder: Path) -> None:
    """mlx-lm builds the model from the folder and takes every weight (shapes and names)."""
    from mlx_lm.utils import load_model

    try:
        load_model(folder, lazy=True, strict=True)
    except (ValueError, KeyError) as exc:
        raise ModelIncompatibleError(f"mlx-lm cannot load the imported model: {exc}") from exc
