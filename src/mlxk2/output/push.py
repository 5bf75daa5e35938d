"""Human text for ``push``: the outcome, the workspace check, and with --verbose the files."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlxk2.output.format import human_size, paint
from mlxk2.output.sink import Output

if TYPE_CHECKING:
    from mlxk2.ops.push import PushResult


def render_push(data: dict[str, Any], out: Output, files: PushResult | None = None) -> str:
    lines = [paint("(experimental) ", "dim", out.color) + data["message"]]
    health = data.get("workspace_health")
    if health is not None:
        verdict = paint("healthy", "green", out.color) if health["healthy"] \
            else paint("unhealthy", "red", out.color)
        lines.append(f"Workspace: {verdict}, {health['files_count']} files, "
                     f"{human_size(health['total_bytes'])}")
        lines.extend(f"  - {problem}" for problem in health["anomalies"])
    elif data.get("commit_sha"):
        summary = data["change_summary"]
        lines.append(f"{data['repo_id']} ({data['branch']}): {summary['added']} added, "
                     f"{summary['modified']} modified, {summary['deleted']} deleted")
        lines.append(f"Commit: {data['commit_url']}")
    if data.get("remote_only_kept"):
        lines.append(f"Kept {data['remote_only_kept']} file(s) on the Hub that the folder "
                     "does not have (--delete removes them)")
    if files is not None:
        for mark, names in (("+", files.added), ("~", files.modified), ("-", files.deleted)):
            lines.extend(f"  {mark} {name}" for name in names)
    return "\n".join(lines)
