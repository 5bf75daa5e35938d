"""Human renderers for the read-only cache commands: list, health and show."""

from __future__ import annotations

import json
from typing import Any

from mlxk2.output.format import human_size, paint, relative_time, table
from mlxk2.output.sink import Output


def _health_cell(model: dict[str, Any], out: Output) -> str:
    if model["health"] != "healthy":
        return paint("unhealthy", "red", out.color)
    if not model["runtime_compatible"]:
        return paint("healthy*", "yellow", out.color)
    return paint("healthy", "green", out.color)


def _is_runnable(model: dict[str, Any]) -> bool:
    return model["health"] == "healthy" and model["runtime_compatible"]


def render_list(data: dict[str, Any], out: Output, *, show_all: bool = False,
                reasons: bool = False, verbose: bool = False) -> str:
    models = data["models"]
    show_all = show_all or reasons  # asking for the reasons means seeing the models they are on
    shown = models if show_all else [m for m in models if _is_runnable(m)]
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
        short = (m["hash"] or "-") if verbose else (m["hash"] or "-")[:8]
        row = [m["name"], short, human_size(m["size_bytes"]),
               relative_time(m["last_modified"]), m["model_type"], _health_cell(m, out)]
        if verbose:
            row[4:4] = [m["framework"], ",".join(m["capabilities"]) or "-"]
        if reasons or show_all:
            row.append(m["reason"] or "")
        rows.append(row)
    text = table(headers, rows, max_width=out.width, truncated=["NAME"], wrapped=["REASON"])
    if hidden:
        text += f"\n({hidden} more not runnable; use --all to show them)"
    return text


def render_health(data: dict[str, Any], out: Output) -> str:
    lines = []
    for entry in data["healthy"]:
        lines.append(f"{paint('ok', 'green', out.color)}   {entry['name']}")
    for entry in data["unhealthy"]:
        lines.append(f"{paint('FAIL', 'red', out.color)} {entry['name']}: {entry['reason']}")
    s = data["summary"]
    lines.append(f"{s['total']} checked: {s['healthy_count']} healthy, "
                 f"{s['unhealthy_count']} unhealthy")
    return "\n".join(lines)


def render_show(data: dict[str, Any], out: Output) -> str:
    m = data["model"]
    rows = [
        ("Name", m["name"]),
        ("Hash", m["hash"] or "-"),
        ("Location", "cache" if m["cached"] else "workspace"),
        ("Size", human_size(m["size_bytes"])),
        ("Modified", f"{m['last_modified']} ({relative_time(m['last_modified'])})"),
        ("Framework", m["framework"]),
        ("Type", m["model_type"]),
        ("Capabilities", ", ".join(m["capabilities"]) or "-"),
        ("Health", m["health"] + (f" ({m['reason']})" if m["health"] != "healthy" else "")),
        ("Runnable", "yes" if m["runtime_compatible"] else f"no ({m['reason']})"),
    ]
    for key, value in (data.get("metadata") or {}).items():
        if value is not None:
            rows.append((key.replace("_", " ").capitalize(), str(value)))
    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"{paint(k.ljust(width), 'bold', out.color)}  {v}" for k, v in rows)
    if "files" in data:
        text += "\n\n" + table(["FILE", "SIZE", "TYPE"],
                               [[f["name"], f["size"], f["type"]] for f in data["files"]])
    if data.get("config") is not None:
        text += "\n\nconfig.json:\n" + json.dumps(data["config"], indent=2)
    return text
