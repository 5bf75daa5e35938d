"""``health``: the integrity verdict for all models, or for the one a pattern names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlxk2.cache.inspect import ModelInfo, inspect_model
from mlxk2.ops.list import list_models
from mlxk2.resolve import resolve

HEALTHY_REASON = "Model is healthy"


def health_report(pattern: str | None = None, root: Path | None = None) -> dict[str, Any]:
    """Healthy and unhealthy entries with a summary, per the spec.

    Raises:
        AmbiguousMatchError, ModelNotFoundError, ValidationError: for a pattern
            that does not name exactly one model.
    """
    models = list_models(root=root) if pattern is None else [inspect_model(resolve(pattern, root))]
    healthy = [_entry(m) for m in models if m.healthy]
    unhealthy = [_entry(m) for m in models if not m.healthy]
    return {
        "healthy": healthy,
        "unhealthy": unhealthy,
        "summary": {"total": len(models), "healthy_count": len(healthy),
                    "unhealthy_count": len(unhealthy)},
    }


def _entry(model: ModelInfo) -> dict[str, str]:
    return {
        "name": model.name,
        "status": model.health,
        "reason": HEALTHY_REASON if model.healthy else (model.reason or "unknown problem"),
    }
