"""`edgefleet report`: plots and a summary of the fleet's history (history.py) over a window:
latency, power, energy per inference and temperature over time, per device and per model
version, as PNG files, and a Markdown or HTML page with a table per version and the events.
"""

from __future__ import annotations

import html
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from edgefleet.fleet.history import History

# (column, title, unit, scale from the stored unit)
PLOTS = (("p95_ms", "p95 invoke latency", "ms", 1.0), ("power_w", "power", "W", 1.0),
         ("mj_per_inference", "energy per inference", "mJ", 1.0), ("temperature_c", "temperature", "°C", 1.0))
SIZE_IN, DPI = (8.0, 4.0), 100  # 800 x 400 pixels
MAX_LINES = 12  # devices drawn one by one; beyond, the per-version plot tells the story


def _series(rows: list[dict[str, Any]], key: str, column: str) -> dict[str, tuple[list[float], list[float]]]:
    out: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for r in rows:
        if r.get(column) is not None and r.get(key) is not None:
            out[r[key]][0].append(r["ts"])
            out[r[key]][1].append(r[column])
    return dict(out)


def _plot(series: dict[str, tuple[list[float], list[float]]], title: str, unit: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from datetime import datetime

    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    if not series:
        return False
    fig, ax = plt.subplots(figsize=SIZE_IN, dpi=DPI)
    for name in sorted(series)[:MAX_LINES]:
        xs, ys = series[name]
        ax.plot([datetime.fromtimestamp(x) for x in xs], ys, label=name, linewidth=1.2)
    ax.set_title(title)
    ax.set_ylabel(unit)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize="small", ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def versions_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model version over the window: devices, messages, median p95, mean power, mean mJ."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("model") and r.get("version"):
            groups[(r["model"], r["version"])].append(r)
    out = []
    for (model, version), rs in sorted(groups.items()):
        def values(column: str, rs: list[dict[str, Any]] = rs) -> list[float]:
            return [r[column] for r in rs if r.get(column) is not None]
        p95, watts, mj = values("p95_ms"), values("power_w"), values("mj_per_inference")
        out.append({"model": model, "version": version, "devices": len({r["device_id"] for r in rs}),
                    "messages": len(rs), "p95_ms_median": statistics.median(p95) if p95 else None,
                    "power_w_mean": statistics.fmean(watts) if watts else None,
                    "mj_per_inference_mean": statistics.fmean(mj) if mj else None})
    return out


def write_report(history: History, folder: Path, since_s: float, fmt: str = "md",
                 now: float | None = None) -> dict[str, Any]:
    """PNGs and report.md (or report.html) in FOLDER for the last SINCE_S seconds; what was written."""
    now = time.time() if now is None else now
    folder.mkdir(parents=True, exist_ok=True)
    rows = history.telemetry(now - since_s, now)
    for r in rows:
        r["model_version"] = f"{r['model']} {r['version']}" if r.get("model") else None
    images = []
    for column, title, unit, _ in PLOTS:
        for key, per in (("device_id", "device"), ("model_version", "version")):
            path = folder / f"{column}-per-{per}.png"
            if _plot(_series(rows, key, column), f"{title} per {per}", unit, path):
                images.append(path.name)
    table = versions_table(rows)
    events = history.events(now - since_s)
    write = _html if fmt == "html" else _markdown
    summary = folder / f"report.{fmt}"
    summary.write_text(write(table, events, images, since_s))
    return {"summary": str(summary), "images": images, "rows": len(rows),
            "devices": len({r["device_id"] for r in rows}), "versions": table, "events": len(events)}


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


Rows = list[dict[str, Any]]


def _when(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def _markdown(table: Rows, events: Rows, images: list[str], since_s: float) -> str:
    lines = [f"# edgefleet report: the last {since_s / 3600:g} h", "",
             "| model | version | devices | messages | p95 ms (median) | W (mean) | mJ per inference (mean) "
             "|", "|---|---|---|---|---|---|---|"]
    lines += [f"| {t['model']} | {t['version']} | {t['devices']} | {t['messages']} | "
              f"{_fmt(t['p95_ms_median'])} | {_fmt(t['power_w_mean'])} | {_fmt(t['mj_per_inference_mean'])} |"
              for t in table]
    lines += ["", "## Events", ""]
    lines += [f"- {_when(e['ts'])} {e['device_id']} {e['kind']}: {e['detail']}" for e in events[-200:]]
    lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in images]
    return "\n".join(lines) + "\n"


def _html(table: Rows, events: Rows, images: list[str], since_s: float) -> str:
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(t['model'])}</td><td>{esc(t['version'])}</td><td>{t['devices']}</td>"
                   f"<td>{t['messages']}</td><td>{_fmt(t['p95_ms_median'])}</td><td>{_fmt(t['power_w_mean'])}</td>"
                   f"<td>{_fmt(t['mj_per_inference_mean'])}</td></tr>" for t in table)
    items = "".join(f"<li>{_when(e['ts'])} {esc(e['device_id'])} "
                    f"{esc(e['kind'])}: {esc(str(e['detail']))}</li>" for e in events[-200:])
    figures = "".join(f'<p><img src="{esc(n)}" alt="{esc(n)}"></p>' for n in images)
    return (f"<!doctype html><meta charset='utf-8'><title>edgefleet report</title>"
            f"<h1>edgefleet report: the last {since_s / 3600:g} h</h1><table border=1><tr><th>model</th>"
            "<th>version</th><th>devices</th><th>messages</th><th>p95 ms (median)</th><th>W (mean)</th>"
            f"<th>mJ per inference (mean)</th></tr>{rows}</table><h2>Events</h2><ul>{items}</ul>"
            f"<h2>Plots</h2>{figures}\n")
