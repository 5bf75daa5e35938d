"""Human text for ``clone``."""

from __future__ import annotations

from typing import Any

from mlxk2.output.format import paint
from mlxk2.output.sink import Output


def render_clone(data: dict[str, Any], out: Output) -> str:
    return f"{paint('✓', 'green', out.color)} {data['model']}: {data['message']}"
