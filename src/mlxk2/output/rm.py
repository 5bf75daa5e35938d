"""Human text for ``rm``: the confirmation question and the result line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlxk2.output.format import paint
from mlxk2.output.sink import Output

if TYPE_CHECKING:
    from mlxk2.ops.rm import RemovalPlan


def confirmation_question(plan: RemovalPlan) -> str:
    what = "the whole model" if plan.whole_model else "this snapshot"
    return f"'{plan.spec}' matches {plan.target}. Delete {what}? [y/N] "


def render_rm(data: dict[str, Any], out: Output) -> str:
    if data["action"] != "deleted":  # a --dry-run preview
        locks = data.get("lock_files") or []
        note = f" (held locks: {', '.join(locks)}; needs --force)" if locks else ""
        return f"{paint('•', 'dim', out.color)} {data['message']}{note}"
    return f"{paint('✓', 'green', out.color)} {data['message']}"
