"""How much memory a model needs and how much the machine can give it."""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path

from mlxk2.cache.files import MLX_WEIGHT_SUFFIXES
from mlxk2.system import MEMINFO, memory_total_bytes, proc_bytes

#: Returns the bytes currently available for a new model, or None when unknown.
MemoryProbe = Callable[[], "int | None"]


def available_memory_bytes(meminfo: Path = MEMINFO) -> int | None:
    """``MemAvailable`` on Linux; all of unified memory on macOS, where MLX can page."""
    if platform.system() == "Darwin":
        return memory_total_bytes()
    return proc_bytes(meminfo, "MemAvailable")


def weight_bytes(model_dir: Path) -> int:
    """Bytes of weight files: the memory a load will take, give or take the KV cache."""
    return sum(
        p.stat().st_size
        for p in model_dir.iterdir()
        if p.name.endswith(MLX_WEIGHT_SUFFIXES) and p.is_file()
    )


def rss_bytes(status: Path = Path("/proc/self/status")) -> int | None:
    """Resident set size of this process (Linux), for ``/health`` and the soak test."""
    return proc_bytes(status, "VmRSS")


def trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc only).

    glibc raises its mmap threshold after the first large free, so later model
    weights land on the heap, where freeing them does not shrink the RSS until
    ``malloc_trim`` runs. Elsewhere this does nothing.
    """
    if platform.system() != "Linux":
        return
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim  # libc is already in the process
    except (OSError, AttributeError):
        return
    trim(0)
