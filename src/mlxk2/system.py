"""Facts about this machine's memory, read without third-party packages."""

from __future__ import annotations

import sys
from pathlib import Path

MEMINFO = Path("/proc/meminfo")


def proc_bytes(path: Path, key: str) -> int | None:
    """A ``Key:   123 kB`` line of a /proc file in bytes; None where it is missing."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_total_bytes(meminfo: Path = MEMINFO) -> int | None:
    """Physical RAM: ``sysctl hw.memsize`` on macOS, ``/proc/meminfo`` on Linux."""
    if sys.platform == "darwin":
        import subprocess

        try:
            result = subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True,
                                    text=True, timeout=5, check=True)
            return int(result.stdout.strip())
        except (OSError, ValueError, subprocess.SubprocessError):
            return None
    return proc_bytes(meminfo, "MemTotal")
