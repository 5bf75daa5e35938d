"""File-level integrity of a model folder (a cache snapshot or a workspace).

One scan collects the folder's facts; an ordered generator of problems turns
them into human reasons. ``check_integrity`` takes the first one (that is the
``reason`` of an unhealthy model), ``workspace_report`` takes them all. The
generator is lazy, so a broken model stops costing I/O at its first problem.

Nothing here imports mlx or follows symlinked directories, and no entry, however
odd (loops, sockets, binary configs, absurd headers), makes a check raise.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from mlxk2.cache.config import read_config
from mlxk2.cache.files import WEIGHT_FORMATS, is_tokenizer_file, is_weight_file
from mlxk2.cache.safetensors import check_file

CONFIG = "config.json"
PREPROCESSOR_FILES = frozenset(
    {"preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json"}
)
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"
# A pointer (version, sha256 oid, size) is about 130 bytes; only files of that
# order of size are opened, so the check stays cheap on big caches.
_LFS_SIZES = range(100, 1024)
TOKENIZER_JSON = "tokenizer.json"
#: Bytes of tokenizer.json read on every scan; files up to this size are parsed whole.
_TOKENIZER_HEAD = 256 * 1024
#: The top-level keys the tokenizers library writes, in its order ("model" last).
_TOKENIZER_KEYS = frozenset({"version", "truncation", "padding", "added_tokens", "normalizer",
                             "pre_tokenizer", "post_processor", "decoder", "model"})
_FIRST_KEY = re.compile(rb'\s*\{\s*"([^"\\]{1,64})"\s*:')
_MODEL_KEY = re.compile(rb'"model"\s*:\s*\{')
_MODEL_KIND = re.compile(rb'"(?:type|vocab)"\s*:')
_NOT_A_TOKENIZER = 'tokenizer.json is not a tokenizer (no "model" with a type or vocab)'
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<idx>\d+)-of-(?P<total>\d+)\.(?P<ext>safetensors|bin)$")


@dataclass
class ModelScan:
    """Facts about one model folder, gathered with one walk.

    ``inspect`` reuses it for sizes and config, so a model is walked once.
    """

    root: Path
    boundary: str | None = None  # links must stay inside this folder (a cache repo)
    files: dict[str, int] = field(default_factory=dict)  # relative name -> size
    dangling: list[str] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    not_files: list[str] = field(default_factory=list)  # folders and links to folders
    escaping: list[str] = field(default_factory=list)  # links leaving ``boundary``
    incomplete_blobs: int = 0
    problem: str | None = None  # the folder itself is unusable

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    @cached_property
    def config(self) -> dict[str, Any] | None:
        return read_config(self.root) if CONFIG in self.top_files else None

    def first_problem(self) -> str | None:
        return next(_problems(self), None)

    @cached_property
    def top_files(self) -> dict[str, int]:
        return {name: size for name, size in self.files.items() if "/" not in name}

    @cached_property
    def weights(self) -> dict[str, int]:
        return {
            name: size
            for name, size in self.top_files.items()
            if is_weight_file(name)
        }


def check_integrity(model_dir: Path) -> str | None:
    """Return the first integrity problem of a model folder, or None if healthy.

    Args:
        model_dir: A cache snapshot folder or a workspace folder.

    Returns:
        A short reason such as ``"config.json missing"`` or
        ``"LFS pointers instead of files: model.safetensors"``; None when healthy.
    """
    return scan_model(model_dir).first_problem()


def workspace_report(model_dir: Path) -> dict[str, Any]:
    """Describe a workspace folder for ``push --check-only``, by the same rules as health.

    Returns:
        ``files_count``, ``total_bytes``, ``config`` {exists, valid_json, path},
        ``weights`` {count, formats, index {has_index, missing}, pattern_complete},
        ``anomalies`` (every problem, in check order) and ``healthy``.
    """
    scan = scan_model(model_dir)
    anomalies = list(_problems(scan))
    top = scan.top_files
    config_path = scan.root / CONFIG
    weights = scan.weights
    missing: list[str] = []
    for index in _index_names(top):
        missing.extend(_missing_shards(scan, index) or [])
    return {
        "files_count": len(scan.files),
        "total_bytes": sum(scan.files.values()),
        "config": {
            "exists": CONFIG in top,
            "valid_json": CONFIG in top and _config_problem(scan) is None,
            "path": str(config_path) if CONFIG in top else None,
        },
        "weights": {
            "count": len(weights),
            "formats": sorted({WEIGHT_FORMATS[Path(n).suffix] for n in weights}),
            "index": {"has_index": bool(_index_names(top)), "missing": sorted(set(missing))},
            "pattern_complete": _pattern_complete(top),
        },
        "anomalies": anomalies,
        "healthy": not anomalies,
    }


def scan_model(model_dir: Path, boundary: Path | None = None) -> ModelScan:
    """Walk a model folder once.

    Args:
        model_dir: A cache snapshot folder or a workspace folder.
        boundary: For cache snapshots, the ``models--`` folder; a link that
            leaves it is reported as a problem and never followed for checks.
    """
    scan = ModelScan(root=model_dir,
                     boundary=os.path.realpath(boundary) if boundary is not None else None)
    try:
        if not model_dir.is_dir():
            scan.problem = "Model folder is not a directory"
            return scan
        _walk(scan, model_dir, "")
    except OSError as exc:
        scan.problem = f"Model folder is not readable ({exc.strerror or type(exc).__name__})"
        return scan
    if model_dir.parent.name == "snapshots":
        scan.incomplete_blobs = _count_incomplete(model_dir.parent.parent / "blobs")
    return scan


def _walk(scan: ModelScan, folder: Path, prefix: str) -> None:
    with os.scandir(folder) as entries:
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                scan.not_files.append(rel)
                if not entry.name.startswith("."):
                    try:
                        _walk(scan, Path(entry.path), rel + "/")
                    except OSError:
                        scan.unreadable.append(rel + "/")
                continue
            if scan.boundary is not None and entry.is_symlink() and _escapes(scan, entry.path):
                scan.escaping.append(rel)
                continue
            try:
                info = os.stat(entry.path)
            except FileNotFoundError:
                scan.dangling.append(rel)
                continue
            except OSError as exc:
                (scan.loops if exc.errno == errno.ELOOP else scan.unreadable).append(rel)
                continue
            if stat.S_ISREG(info.st_mode):
                scan.files[rel] = info.st_size
            elif stat.S_ISDIR(info.st_mode):
                scan.not_files.append(rel)
            else:
                scan.unreadable.append(rel)


def _escapes(scan: ModelScan, link: str) -> bool:
    if scan.boundary is None:
        return False
    target = os.path.join(os.path.dirname(link), os.readlink(link))
    inside = scan.boundary + os.sep
    return not (os.path.normpath(target) + os.sep).startswith(inside) and \
        not os.path.realpath(target).startswith(inside)


def _count_incomplete(blobs: Path) -> int:
    try:
        with os.scandir(blobs) as entries:
            return sum(1 for e in entries if e.name.endswith(".incomplete"))
    except OSError:
        return 0


def _problems(scan: ModelScan) -> Iterator[str]:
    """Yield every integrity problem, most fundamental first."""
    if scan.problem:
        yield scan.problem
        return
    if scan.incomplete_blobs:
        yield f"Download incomplete: {scan.incomplete_blobs} unfinished file(s) in blobs/"
    if scan.escaping:
        yield f"Links point outside the cache: {_names(scan.escaping)}"
    if scan.dangling:
        yield f"Download incomplete: missing files for links {_names(scan.dangling)}"
    unfinished = [n for n in scan.files if n.endswith(".incomplete")]
    if unfinished:
        yield f"Unfinished files: {_names(unfinished)}"
    if scan.loops:
        yield f"Symlink loops: {_names(scan.loops)}"
    if scan.unreadable:
        yield f"Unreadable files: {_names(scan.unreadable)}"
    pointers = _lfs_pointers(scan)
    if pointers:
        yield f"LFS pointers instead of files: {_names(pointers)}"
    config = _config_problem(scan)
    if config:
        yield config
    yield from _weight_problems(scan)
    tokenizer = _tokenizer_problem(scan)
    if tokenizer:
        yield tokenizer
    vision = _vision_problem(scan)
    if vision:
        yield vision


def _lfs_pointers(scan: ModelScan) -> list[str]:
    found = []
    for name, size in scan.files.items():
        if size in _LFS_SIZES:
            try:
                with open(scan.root / name, "rb") as fh:
                    head = fh.read(len(LFS_POINTER_PREFIX))
            except OSError:
                continue
            if head == LFS_POINTER_PREFIX:
                found.append(name)
    return found


def _config_problem(scan: ModelScan) -> str | None:
    top = scan.top_files
    if CONFIG in scan.not_files:
        return "config.json is not a file"
    if CONFIG not in top:
        # GGUF repositories carry their metadata inside the .gguf file.
        if any(n.endswith(".gguf") for n in scan.weights):
            return None
        return "config.json missing"
    if top[CONFIG] == 0:
        return "config.json is empty"
    try:
        raw = (scan.root / CONFIG).read_bytes()
    except OSError as exc:
        return f"config.json is not readable ({exc.strerror or type(exc).__name__})"
    if not raw.strip():
        return "config.json is empty"
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "config.json is not valid JSON"
    if not isinstance(doc, dict):
        return "config.json is not a JSON object"
    return None


def _weight_problems(scan: ModelScan) -> Iterator[str]:
    weights = scan.weights
    if not weights:
        yield "No weight files found"
        return
    empty = [n for n, size in weights.items() if size == 0]
    if empty:
        yield f"Empty weight files: {_names(empty)}"
    top = scan.top_files
    indexes = _index_names(top)
    reported: set[str] = set()
    for index in indexes:
        missing = _missing_shards(scan, index)
        if missing is None:
            yield f"{index} is not a valid index"
        elif missing:
            reported.update(missing)
            yield f"Missing shards listed in {index}: {_names(missing)}"
    gaps = [n for n in _shard_gaps(top) if n not in reported]
    if gaps:
        yield f"Incomplete shard set: {_names(gaps)} missing"
    unindexed = sorted(
        {
            f"{m['stem']}.{m['ext']}.index.json"
            for name in weights
            if (m := _SHARD.match(name)) and int(m["total"]) > 1
        }
        - set(indexes)
    )
    if unindexed:
        yield f"Sharded weights without index: {_names(unindexed)} missing"
    bad = []
    for name, size in sorted(weights.items()):
        if name.endswith(".safetensors") and size > 0:
            reason = check_file(scan.root / name)
            if reason:
                bad.append(f"{name} ({reason})")
    if bad:
        yield f"Truncated or malformed safetensors: {', '.join(bad)}"


def _index_names(top: dict[str, int]) -> list[str]:
    return sorted(
        n for n in top if n.endswith(".safetensors.index.json") or n.endswith(".bin.index.json")
    )


def _missing_shards(scan: ModelScan, index: str) -> list[str] | None:
    """Shards an index names that are absent; None when the index is unusable."""
    try:
        doc = json.loads((scan.root / index).read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        return None
    return sorted({v for v in weight_map.values() if v not in scan.files})


def _pattern_complete(top: dict[str, int]) -> bool:
    """True when every ``*-0000i-of-0000N`` shard family has all N members."""
    return not _shard_gaps(top)


def _shard_gaps(top: dict[str, int]) -> list[str]:
    """Members absent from each ``<stem>-0000i-of-0000N.<ext>`` family present."""
    families: dict[tuple[str, str, int, int], set[int]] = {}
    for name in top:
        m = _SHARD.match(name)
        if m:
            key = (m["stem"], m["ext"], int(m["total"]), len(m["idx"]))
            families.setdefault(key, set()).add(int(m["idx"]))
    return sorted(
        f"{stem}-{i:0{width}d}-of-{total:0{width}d}.{ext}"
        for (stem, ext, total, width), seen in families.items()
        if total <= 10_000
        for i in range(1, total + 1)
        if i not in seen
    )


def _tokenizer_problem(scan: ModelScan) -> str | None:
    top = scan.top_files
    if TOKENIZER_JSON in top:
        return _tokenizer_json_problem(scan.root / TOKENIZER_JSON, top[TOKENIZER_JSON])
    if "tokenizer_config.json" not in top:
        return None
    if any(is_tokenizer_file(n) for n in top):
        return None
    return "tokenizer_config.json present but no tokenizer file (tokenizer.json or tokenizer.model)"


def _tokenizer_json_problem(path: Path, size: int) -> str | None:
    """Why ``tokenizer.json`` is not a tokenizer, from a bounded read; None if it looks like one.

    This runs on every ``list``, and real files are 2-30 MB, so only small files are
    parsed whole. A large one must open like a tokenizer (its first key one of the
    format's own, and the ``"model"`` object, which the format writes after the
    short settings, naming its ``type`` or ``vocab`` if it is within the first
    :data:`_TOKENIZER_HEAD` bytes) and end like a JSON object, so a truncated
    download shows too. Loading still parses it fully, and names the file if that fails.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(_TOKENIZER_HEAD)
            if head.startswith(LFS_POINTER_PREFIX):
                return None  # reported as an LFS pointer already
            if size <= _TOKENIZER_HEAD:
                return tokenizer_document_problem(head + fh.read())
            fh.seek(-64, os.SEEK_END)
            tail = fh.read()
    except OSError as exc:
        return f"tokenizer.json unreadable: {exc.strerror or type(exc).__name__}"
    first = _FIRST_KEY.match(head)
    if first is None:
        return "tokenizer.json is not valid JSON"
    if first.group(1).decode("utf-8", "replace") not in _TOKENIZER_KEYS:
        return _NOT_A_TOKENIZER
    model = _MODEL_KEY.search(head)
    if model is not None and not _MODEL_KIND.search(head, model.end(), model.end() + 1024):
        return _NOT_A_TOKENIZER
    if not tail.rstrip().endswith(b"}"):
        return "tokenizer.json is truncated (it does not end like a JSON object)"
    return None


def tokenizer_document_problem(data: bytes) -> str | None:
    """Why the whole text of a ``tokenizer.json`` is not a tokenizer; None if it is one."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return "tokenizer.json is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return (f"tokenizer.json is not valid JSON "
                f"({exc.msg} at line {exc.lineno} column {exc.colno})")
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, dict) or not ("type" in model or "vocab" in model):
        return _NOT_A_TOKENIZER
    return None


def _vision_problem(scan: ModelScan) -> str | None:
    config = scan.config
    if not config or "vision_config" not in config:
        return None
    if PREPROCESSOR_FILES & scan.top_files.keys():
        return None
    return "Vision model without preprocessor_config.json"


def _names(names: list[str], limit: int = 5) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} (+{len(names) - limit} more)"
