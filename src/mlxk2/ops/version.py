"""Version and system facts for ``mlxk2 --version``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mlxk2 import JSON_API_SPEC_VERSION, __version__


def memory_total_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Physical RAM: ``sysctl hw.memsize`` on macOS, ``/proc/meminfo`` on Linux."""
    if sys.platform == "darwin":
        import subprocess

        try:
            result = subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True,
                                    text=True, timeout=5, check=True)
            return int(result.stdout.strip())
        except (OSError, ValueError, subprocess.SubprocessError):
            return None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def version_info() -> dict[str, Any]:
    memory = memory_total_bytes()
    return {
        "cli_version": __version__,
        "json_api_spec_version": JSON_API_SPEC_VERSION,
        "system": None if memory is None else {"memory_total_bytes": memory},
    }
