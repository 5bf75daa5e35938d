"""Human renderers for the read-only cache commands: list, health and show."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from mlxk2.cache.inspect import ModelInfo
from mlxk2.output.format import human_size, paint, relative_time, table
from mlxk2.output.sink import Output

if TYPE_CHECKING:
    from mlxk2.ops.health import HealthReport
    from mlxk2.ops.list import ListResult
    from mlxk2.ops.show import ShowResult


def _health_cell(model: ModelInfo, out: Output) -> str:
    if not model.healthy:
        return paint("unhealthy", "red", out.color)
    if not model.runtime_compatible:
        return paint("healthy*", "yellow", out.color)
    return paint("healthy", "green", out.color)


def _reason(model: ModelInfo) -> str:
    """The spec's reason, else why the model cannot serve its purpose."""
    refusal = model.refusal()
    return model.reason or (refusal.reason if refusal else "")


def render_list(result: ListResult, out: Output, *, show_all: bool = False,
                reasons: bool = False, verbose: bool = False) -> str:
    models = result.models
    show_all = show_all or reasons  # asking for the reasons means seeing the models they are on
    shown = models if show_all else tuple(m for m in models if m.refusal() is None)
    hidden = len(models) - len(shown)
    if not shown:
        text = "No models found."
        return text + (f" ({hidden} not runnable; use --all)" if hidden else "")
    headers = ["NAME", "ID", "SIZE", "MODIFIED", "TYPE", "HEALTH"]
    if verbose:
        headers[4:4] = ["FRAMEWORK", "CAPABILITIES"]
    if reasons or show_all:
        headers.append("REASON")
    rows = []
    for m in shown:
        short = (m.hash or "-") if verbose else (m.hash or "-")[:8]
        row = [m.name, short, human_size(m.size_bytes),
               relative_time(m.last_modified_iso), m.model_type, _health_cell(m, out)]
        if verbose:
            row[4:4] = [m.framework, ",".join(m.capabilities) or "-"]
        if reasons or show_all:
            row.append(_reason(m))
        rows.append(row)
    text = table(headers, rows, max_width=out.width, truncated=["NAME"], wrapped=["REASON"])
    if hidden:
        text += f"\n({hidden} more not runnable; use --all to show them)"
    return text


def render_health(report: HealthReport, out: Output) -> str:
    lines = []
    for entry in report.healthy:
        lines.append(f"{paint('ok', 'green', out.color)}   {entry.name}")
    for entry in report.unhealthy:
        lines.append(f"{paint('FAIL', 'red', out.color)} {entry.name}: {entry.reason}")
    lines.append(f"{report.total} checked: {len(report.healthy)} healthy, "
                 f"{len(report.unhealthy)} unhealthy")
    return "\n".join(lines)


def render_show(result: ShowResult, out: Output) -> str:
    m = result.model
    refusal = m.refusal()
    stamp = m.last_modified_iso
    rows = [
        ("Name", m.name),
        ("Hash", m.hash or "-"),
        ("Location", "cache" if m.cached else "workspace"),
        ("Size", human_size(m.size_bytes)),
        ("Modified", f"{stamp} ({relative_time(stamp)})"),
        ("Framework", m.framework),
        ("Type", m.model_type),
        ("Capabilities", ", ".join(m.capabilities) or "-"),
        ("Health", m.health + (f" ({m.reason})" if not m.healthy else "")),
        ("Runnable", "yes" if refusal is None else f"no ({refusal.reason})"),
    ]
    if result.metadata is not None:
        for key, value in result.metadata.to_dict().items():
            if value is not None:
                rows.append((key.replace("_", " ").capitalize(), str(value)))
    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"{paint(k.ljust(width), 'bold', out.color)}  {v}" for k, v in rows)
    if result.files is not None:
        text += "\n\n" + table(["FILE", "SIZE", "TYPE"],
                               [[f.name, human_size(f.size_bytes), f.kind]
                                for f in result.files])
    if result.config is not None:
        text += "\n\nconfig.json:\n" + json.dumps(result.config, indent=2)
    return text
