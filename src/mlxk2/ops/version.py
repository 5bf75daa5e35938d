"""Version and system facts for ``mlxk2 --version``."""

from __future__ import annotations

from typing import Any

from mlxk2 import JSON_API_SPEC_VERSION, __version__
from mlxk2.engine.blas import configured_blas
from mlxk2.engine.launch import distributed_facts
from mlxk2.system import memory_total_bytes


def version_info() -> dict[str, Any]:
    """Versions, RAM, the BLAS that ``run`` and ``serve`` bind (configured, not loaded)
    and the distributed launch this process is part of, if any."""
    memory = memory_total_bytes()
    system: dict[str, Any] = {} if memory is None else {"memory_total_bytes": memory}
    system["blas"] = configured_blas().to_dict()
    system["distributed"] = distributed_facts()
    return {
        "cli_version": __version__,
        "json_api_spec_version": JSON_API_SPEC_VERSION,
        "system": system,
    }
