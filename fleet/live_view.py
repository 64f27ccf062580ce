"""The monitor's live view: one line per device in fixed columns that fit 80 columns, a device's
error on a line of its own below it, a footer that says what is hidden and how ingest keeps
up, and a table per model version. Drawn at a bounded rate, apart from ingest (fleet_view.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from edgefleet.fleet.alerts import AlertBook, evaluate
from edgefleet.fleet.fleet_view import FleetView, versions

# (header, width, right-aligned): 69 characters and 10 spaces between them
COLUMNS = (("device", 12, False), ("status", 8, False), ("model", 11, False), ("deleg", 7, False),
           ("p50", 5, True), ("p95", 5, True), ("inf/s", 5, True), ("W", 4, True), ("mJ", 5, True),
           ("°C", 4, True), ("seen", 4, True))
WIDTH = sum(w for _, w, _ in COLUMNS) + len(COLUMNS) - 1
LEGEND = ("p50/p95: invoke latency, ms; W and mJ per inference: power_source in --json says measured "
          "or estimated; °C! throttled; deleg: delegate and its share of the work; model a→b: active a, "
          "desired b")
STATUSES = ("online", "stale", "offline", "stopped", "unknown", "failed")
SORTS = ("device", "status", "model", "p95", "energy", "seen")
COLOURS = {"online": "green", "stale": "yellow", "offline": "red", "stopped": "yellow", "unknown": "white"}
SHORT_DELEGATE = {"edgetpu": "tpu", "cpu": "cpu", "xnnpack": "cpu", "gpu": "gpu"}
_ORDER = {"failed": 0, "offline": 1, "stale": 2, "unknown": 3, "stopped": 4, "online": 5}


@dataclass(frozen=True)
class Filters:
    group: str | None = None
    model: str | None = None  # a model name, or name:version
    status: str | None = None  # one of STATUSES (failed: the last install failed)
    sort: str = "device"

    def keep(self, row: dict[str, Any]) -> bool:
        if self.group and self.group not in row["groups"]:
            return False
        if self.model:
            name, _, version = self.model.partition(":")
            if row["model_name"] != name or (version and row["model_version"] != version):
                return False
        if self.status == "failed":
            return row["install"] == "failed" or row["state"] == "failed"
        return not self.status or row["status"] == self.status


EVERY = Filters()  # no filter, by device id


def _age(seconds: float) -> str:
    """Compact: 42s, 5m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def fit_number(value: float | None, width: int) -> str:
    """At most WIDTH characters, three significant digits where they fit: 0.012, 1.23, 12.3, 1234."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    size = abs(value)
    decimals = 3 if size < 1 else 2 if size < 10 else 1 if size < 100 else 0
    for d in range(decimals, -1, -1):
        text = f"{value:.{d}f}"
        if len(text) <= width:
            return text
    return f"{value / 1000:.0f}k" if len(f"{value / 1000:.0f}k") <= width else "…"


def _cell(text: str, width: int, right: bool) -> str:
    if len(text) > width:
        text = text[: width - 1] + "…"
    return text.rjust(width) if right else text.ljust(width)


def _status(row: dict[str, Any], now: float) -> tuple[str, str]:
    status, state = row["status"], row["state"]
    colour = COLOURS.get(status, "white")
    if status == "online":
        text = {"downloading": "dl", "verifying": "verify", "self-testing": "selftest"}.get(
            state or "", "online")
        if state == "downloading" and row["install_progress"] is not None:
            text = f"dl {100 * row['install_progress']:.0f}%"
        if row["install"] == "failed" or state == "failed":
            return "failed", "red"
        return text, colour
    age = row["last_seen_age_s"]
    short = {"offline": "off", "stopped": "stop"}.get(status, status)
    return (f"{short} {_age(age)}" if age is not None else short), colour


def _model(row: dict[str, Any]) -> str:
    name, version, want = row["model_name"], row["model_version"], row["desired_version"]
    if not name:
        return f"- →{want}" if want else "-"
    shown = version if not want or want == version else f"{version}→{want}"
    room = COLUMNS[2][1] - len(shown) - 1
    return f"{name[:room - 1]}… {shown}" if len(name) > room else f"{name} {shown}"


def _delegate(row: dict[str, Any]) -> str:
    d = row["delegate"]
    if not d:
        return "-"
    short = SHORT_DELEGATE.get(d, d[:3])
    share = row["delegated_share"]
    return f"{short} {100 * share:.0f}%" if share is not None and short != "cpu" else short


def device_line(row: dict[str, Any], now: float) -> Text:
    status, colour = _status(row, now)
    temperature = fit_number(row["temperature_c"], 3) if row["temperature_c"] is not None else "-"
    if row["throttled"]:
        temperature += "!"
    seen = _age(row["last_seen_age_s"]) if row["last_seen_age_s"] is not None else "-"
    cells = [row["device_id"], status, _model(row), _delegate(row),
             fit_number(row["latency_p50_ms"], 5), fit_number(row["latency_p95_ms"], 5),
             fit_number(row["throughput_per_s"], 5), fit_number(row["power_w"], 4),
             fit_number(row["energy_per_inference_mj"], 5), temperature, seen]
    line = Text(no_wrap=True, overflow="ellipsis")
    for i, (value, (_, width, right)) in enumerate(zip(cells, COLUMNS, strict=True)):
        # everything a device sends is text from the network: Text never reads it as markup
        line.append(_cell(str(value), width, right), style=colour if i == 1 else "")
        if i < len(COLUMNS) - 1:
            line.append(" ")
    return line


def _sorted(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    if sort == "status":
        return sorted(rows, key=lambda r: (0 if r["install"] == "failed" else _ORDER.get(r["status"], 9) + 1,
                                           r["device_id"]))
    if sort == "model":
        return sorted(rows, key=lambda r: (r["model_name"] or "~", r["model_version"] or "", r["device_id"]))
    key = {"p95": "latency_p95_ms", "energy": "energy_per_inference_mj", "seen": "last_seen_age_s"}.get(sort)
    if key:
        return sorted(rows, key=lambda r: (-(r[key] if r[key] is not None else -1), r["device_id"]))
    return rows  # by device id already


def render_devices(view: FleetView, filters: Filters = EVERY, height: int | None = None,
                   width: int = WIDTH, now: float | None = None,
                   version_rows: list[dict[str, Any]] | None = None, book: AlertBook | None = None) -> Group:
    """The device lines, at most HEIGHT lines in all (None: every device), each device's error
    and alerts (alerts.py, judged against VERSION_ROWS; BOOK keeps and publishes them) below it."""
    now = time.time() if now is None else now
    every = view.rows(now)
    rows = _sorted([r for r in every if filters.keep(r)], filters.sort)
    alerts = evaluate(view, versions(view) if version_rows is None else version_rows, every)
    if book is not None:
        alerts = book.update(alerts, now)
    notes: dict[str, list[dict[str, Any]]] = {}
    for a in alerts:  # the status column already says offline, stale and failed
        if a["kind"] not in ("offline", "stale", "install_failed"):
            notes.setdefault(a["device_id"], []).append(a)
    title = Text(f"edgefleet devices ({view.topics.prefix})", style="bold", no_wrap=True, overflow="ellipsis")
    if not view.connected:
        title.append(" - not connected to the broker, reconnecting", style="red")
    elif not every:
        title.append(" - no devices seen yet")
    header = Text(" ".join(_cell(h, w, r) for h, w, r in COLUMNS), style="bold", no_wrap=True,
                  overflow="ellipsis")
    lines: list[RenderableType] = [title, header]
    room = None if height is None else max(height - 4, 1)
    shown = 0
    for row in rows:
        mine = notes.get(row["device_id"], [])
        extra = (1 if row["last_error"] else 0) + len(mine)
        if room is not None and len(lines) - 2 + 1 + extra > room:
            break
        lines.append(device_line(row, now))
        if row["last_error"]:  # at full width, on its own line: never pushes the columns aside
            error = Text(f"  ↳ {row['last_error']}", style="red", no_wrap=True, overflow="ellipsis")
            lines.append(error)
        for a in mine:
            style = "red" if a["severity"] == "critical" else "yellow"
            lines.append(Text(f"  ⚠ {a['kind']}: {a['summary']}", style=style, no_wrap=True,
                              overflow="ellipsis"))
        shown += 1
    counts: dict[str, int] = {}
    for r in every:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    said = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s))
    foot = f"{len(every)} devices" + (f": {said}" if said else "")
    if shown < len(rows) or len(rows) < len(every):
        foot += f"; showing {shown} of {len(rows)}" + (" matching" if len(rows) < len(every) else "")
        foot += " (--group, --model, --status, --sort)"
    if alerts:
        kinds: dict[str, int] = {}
        for a in alerts:
            kinds[a["kind"]] = kinds.get(a["kind"], 0) + 1
        foot += "; alerts: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    stats = view.stats.as_dict()
    foot += f"; ingest {stats['messages_per_s']:,.0f} msg/s"
    if stats["lag_p99_s"] is not None:
        foot += f", lag p99 {stats['lag_p99_s']:.2f} s"
    lines.append(Text(foot, style="dim", no_wrap=False))
    return Group(*lines)


def render_versions(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="per model version: latency over every inference, mJ over the latest window",
                  title_justify="left", box=None, pad_edge=False, padding=(0, 1, 0, 0))
    for col in ("model", "version", "devices", "inf/s", "p50", "p95", "p99", "mJ/inf", "errors"):
        table.add_column(col, justify="left" if col in ("model", "version") else "right", no_wrap=True,
                         overflow="ellipsis", max_width=16 if col == "model" else None)
    for r in rows:
        table.add_row(Text(r["model_name"]), Text(r["model_version"]), str(r["devices"]),
                      fit_number(r["throughput_per_s"], 6), fit_number(r["latency_p50_ms"], 5),
                      fit_number(r["latency_p95_ms"], 5), fit_number(r["latency_p99_ms"], 5),
                      fit_number(r["energy_per_inference_mj"], 6), str(r["errors"]))
    return table


def render(view: FleetView, filters: Filters = EVERY, height: int | None = None,
           version_rows: list[dict[str, Any]] | None = None, book: AlertBook | None = None) -> Group:
    rows = versions(view) if version_rows is None else version_rows
    parts: list[RenderableType] = [render_devices(view, filters, height, version_rows=rows, book=book)]
    if rows:
        parts += [Text(""), render_versions(rows)]
    parts.append(Text(LEGEND, style="dim"))
    return Group(*parts)


def watch(view: FleetView, filters: Filters = EVERY, min_interval_s: float = 0.5,
          stop: Callable[[], bool] = lambda: False, console: Any = None,
          book: AlertBook | None = None) -> None:
    """Redraw until Ctrl-C (or STOP() says so), at most every MIN_INTERVAL_S and never more
    than a tenth of the time: drawing shares the process with ingest, which must keep up."""
    from rich.console import Console
    from rich.live import Live

    console = console or Console()
    version_rows: list[dict[str, Any]] = []
    versions_at = 0.0
    with Live(console=console, auto_refresh=False, screen=False, transient=False) as live:
        try:
            while not stop():
                began = time.perf_counter()
                if time.monotonic() - versions_at > 5.0:  # merging histograms is the costly part
                    version_rows, versions_at = versions(view), time.monotonic()
                height = max(console.size.height - len(version_rows) - 6, 8)
                live.update(render(view, filters, height, version_rows, book), refresh=True)
                spent = time.perf_counter() - began
                time.sleep(max(min_interval_s, 10 * spent) - spent)
        except KeyboardInterrupt:
            pass
