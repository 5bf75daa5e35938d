"""``health``: the integrity verdict for all models, or for every model a pattern matches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxk2.cache.inspect import ModelInfo, inspect_model
from mlxk2.ops.list import list_models
from mlxk2.resolve import is_workspace_spec, resolve, split_revision

HEALTHY_REASON = "Model is healthy"


@dataclass(frozen=True)
class HealthEntry:
    name: str
    status: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "reason": self.reason}


@dataclass(frozen=True)
class HealthReport:
    """Healthy and unhealthy entries; the summary is derived from them."""

    healthy: tuple[HealthEntry, ...]
    unhealthy: tuple[HealthEntry, ...]

    @property
    def total(self) -> int:
        return len(self.healthy) + len(self.unhealthy)

    @property
    def all_healthy(self) -> bool:
        return not self.unhealthy

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": [e.to_dict() for e in self.healthy],
            "unhealthy": [e.to_dict() for e in self.unhealthy],
            "summary": {"total": self.total, "healthy_count": len(self.healthy),
                        "unhealthy_count": len(self.unhealthy)},
        }


def health_report(pattern: str | None = None, root: Path | None = None) -> HealthReport:
    """Check every model ``pattern`` matches, as ``list`` filters; all models without one.

    A workspace path or ``name@rev`` names one model; a pattern that matches no
    cached name is resolved as ``run`` would (``mlx-community/`` expansion, a
    local folder typed without ``./``).

    Raises:
        ModelNotFoundError, ValidationError: a pattern that names no model.
        AmbiguousMatchError: ``name@rev`` whose revision matches several snapshots.
    """
    models = _matching(pattern, root)
    return HealthReport(
        healthy=tuple(_entry(m) for m in models if m.healthy),
        unhealthy=tuple(_entry(m) for m in models if not m.healthy),
    )


def _matching(pattern: str | None, root: Path | None) -> list[ModelInfo]:
    if pattern is None:
        return list_models(root=root)
    if is_workspace_spec(pattern) or split_revision(pattern)[1] is not None:
        return [inspect_model(resolve(pattern, root))]
    return list_models(pattern, root) or [inspect_model(resolve(pattern, root))]


def _entry(model: ModelInfo) -> HealthEntry:
    reason = HEALTHY_REASON if model.healthy else (model.reason or "unknown problem")
    return HealthEntry(model.name, model.health, reason)
