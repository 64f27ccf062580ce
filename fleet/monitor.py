"""Watch the fleet: status, reported state and telemetry of every device, live or as one snapshot."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from edgefleet.protocol.topics import Topics


@dataclass
class DeviceView:
    device_id: str
    status: dict[str, Any] | None = None
    reported: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None
    telemetry_received_at: float | None = None

    def summary(self) -> dict[str, Any]:
        tel = self.telemetry or {}
        inf, sysm = tel.get("inference") or {}, tel.get("system") or {}
        rep = self.reported or {}
        active = rep.get("active") or {}
        delegate = tel.get("delegate") or active.get("delegate") or {}
        runtime = tel.get("runtime") or active.get("runtime") or {}
        install = rep.get("install") or {}
        return {
            "device_id": self.device_id,
            "status": (self.status or {}).get("state", "unknown"),
            "state": rep.get("state"),
            "bundle_id": active.get("bundle_id"),
            "model_name": active.get("name"),
            "model_version": active.get("version"),
            "install": install.get("state"),
            "install_progress": install.get("progress"),
            "last_error": (rep.get("last_error") or {}).get("reason"),
            "runtime": runtime.get("name"),
            "delegate": delegate.get("active"),
            "inference_count": inf.get("count_total"),
            "errors": inf.get("errors_total"),
            "latency_p50_ms": inf.get("latency_p50_ms"),
            "latency_p95_ms": inf.get("latency_p95_ms"),
            "latency_p99_ms": inf.get("latency_p99_ms"),
            "process_cpu_percent": sysm.get("process_cpu_percent"),
            "rss_bytes": sysm.get("rss_bytes"),
            "temperature_c": sysm.get("temperature_c"),
            "telemetry_age_s": round(time.time() - self.telemetry_received_at, 1)
            if self.telemetry_received_at else None,
            "last_seen_at": self.last_seen_at(),
        }

    def last_seen_at(self) -> float | None:
        """The newest time the device itself stamped on a message (its clock). The `offline`
        last will carries no time: the broker sends it when it notices the device is gone."""
        stamps = [m.get("ts") for m in (self.status, self.reported, self.telemetry) if m]
        numbers = [s for s in stamps if isinstance(s, (int, float)) and not isinstance(s, bool)]
        return max(numbers) if numbers else None


@dataclass
class FleetView:
    topics: Topics
    devices: dict[str, DeviceView] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    connected: bool = True

    def subscriptions(self) -> list[str]:
        return [self.topics.all_devices(leaf) for leaf in ("status", "reported", "telemetry")]

    def handle(self, topic: str, payload: bytes) -> None:
        device_id = self.topics.device_of(topic)
        leaf = topic.rsplit("/", 1)[-1]
        if device_id is None or leaf not in ("status", "reported", "telemetry"):
            return
        try:
            body = json.loads(payload) if payload else None
        except ValueError:
            return  # a monitor shows what it can read; it never crashes on a bad message
        if body is not None and not isinstance(body, dict):
            return
        with self.lock:
            view = self.devices.setdefault(device_id, DeviceView(device_id))
            setattr(view, leaf, body)
            if leaf == "telemetry":
                view.telemetry_received_at = time.time()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            rows = [self.devices[d].summary() for d in sorted(self.devices)]
            raw = {d: {"status": v.status, "reported": v.reported, "telemetry": v.telemetry}
                   for d, v in sorted(self.devices.items())}
        return {"ts": time.time(), "devices": rows, "raw": raw}

    def complete(self) -> bool:
        """Every device that says it is online has sent telemetry."""
        with self.lock:
            online = [v for v in self.devices.values() if (v.status or {}).get("state") == "online"]
            return bool(online) and all(v.telemetry for v in online)


def attach(client: mqtt.Client, view: FleetView) -> None:
    topics = [(t, 0) for t in view.subscriptions()]
    client.on_message = lambda c, u, msg: view.handle(msg.topic, bytes(msg.payload))

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                   properties: Any) -> None:
        view.connected = not reason_code.is_failure
        if view.connected:  # clean sessions: a reconnection needs the subscriptions again
            client.subscribe(topics)

    def on_disconnect(client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                      properties: Any) -> None:
        if reason_code.is_failure:  # our own clean disconnect after --once is not an outage
            view.connected = False

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    view.connected = client.is_connected()
    client.subscribe(topics)


def collect(client: mqtt.Client, topics: Topics, wait_s: float) -> FleetView:
    """Listen up to WAIT_S seconds; stop early once every online device has reported telemetry."""
    view = FleetView(topics)
    attach(client, view)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not view.complete():
        time.sleep(0.1)
    return view


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _age(seconds: float) -> str:
    """Compact: 42s, 5m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def render_table(view: FleetView) -> Any:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    snapshot = view.snapshot()["devices"]
    title = f"edgefleet devices ({escape(view.topics.prefix)})"
    if not view.connected:
        title += " [red]- not connected to the broker, reconnecting[/]"
    elif not snapshot:
        title += " - no devices seen yet"
    table = Table(title=title, box=box.SIMPLE_HEAD,
                  pad_edge=False, caption="p50/p99: invoke latency in ms; cpu%, MiB: the agent "
                  "process; °C: hottest thermal zone; offline 5m: last heard from 5 minutes ago")
    # device ids stay whole; the figures may wrap on a narrow terminal
    widest = max((len(r["device_id"]) for r in snapshot), default=6)
    table.add_column("device", no_wrap=True, min_width=min(widest, 32))
    table.add_column("model", no_wrap=True)
    table.add_column("state", no_wrap=True, min_width=7)
    for col, justify in (("infer", "right"), ("p50", "right"), ("p99", "right"),
                         ("cpu%", "right"), ("MiB", "right"), ("°C", "right")):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in snapshot:
        # one column for both: an online device shows its install state, others their status
        status = row["status"]
        state = row["state"] or "-" if status == "online" else status
        if status != "online" and row["last_seen_at"] is not None:
            state = f"{status} {_age(time.time() - row['last_seen_at'])}"
        if row["install"] == "downloading" and row["install_progress"] is not None:
            state = f"downloading {100 * row['install_progress']:.0f}%"
        colour = {"online": "green", "offline": "red", "stopped": "yellow"}.get(status, "white")
        if row["state"] == "failed":
            colour = "red"
        # everything a device sends is text from the network: never rich markup
        model = escape(f"{row['model_name']} v{row['model_version']}") if row["model_name"] else "-"
        rss = row["rss_bytes"] / 2**20 if row["rss_bytes"] else None
        table.add_row(
            escape(row["device_id"]), model, f"[{colour}]{escape(state)}[/]", _fmt(row["inference_count"]),
            _fmt(row["latency_p50_ms"], digits=3), _fmt(row["latency_p99_ms"], digits=3),
            _fmt(row["process_cpu_percent"], digits=1), _fmt(rss, digits=1),
            _fmt(row["temperature_c"], digits=1),
        )
        if row["last_error"]:
            error = str(row["last_error"])  # whole in --json; one line here keeps the table narrow
            error = error if len(error) <= 70 else error[:69] + "…"
            table.add_row("", f"[red]last error: {escape(error)}[/]", end_section=True)
    return table


def watch(client: mqtt.Client, topics: Topics, refresh_s: float = 1.0) -> None:
    """Live table until Ctrl-C."""
    from rich.live import Live

    view = FleetView(topics)
    attach(client, view)
    with Live(render_table(view), refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(refresh_s)
                live.update(render_table(view))
        except KeyboardInterrupt:
            pass


def snapshot_json(view: FleetView) -> str:
    return json.dumps(view.snapshot(), indent=2)
