"""Watch the fleet over MQTT: subscribe a FleetView (fleet_view.py) to the devices' topics, and
show it live (live_view.py) or as one snapshot."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from edgefleet.fleet.fleet_view import DeviceView, FleetView
from edgefleet.protocol.topics import Topics

if TYPE_CHECKING:  # the live view needs rich (the fleet extra); subscribing does not
    from edgefleet.fleet.live_view import Filters

__all__ = ["DeviceView", "FleetView", "attach", "collect", "render_table", "snapshot_json", "watch"]


def subscriptions(view: FleetView, share: str | None = None) -> list[tuple[str, int]]:
    """QoS 0: a monitor wants the newest figures, not a queue of old ones. SHARE: telemetry through
    the shared subscription `$share/SHARE/...`, so that monitors or exporters with the same SHARE
    each take part of it (MQTT 5, and Mosquitto for 3.1.1 too); retained topics are never shared,
    since a shared subscription gets no retained messages."""
    topics = view.subscriptions()
    if share:
        topics = [f"$share/{share}/{t}" if t.endswith("/telemetry") else t for t in topics]
    return [(t, 0) for t in topics]


def attach(client: mqtt.Client, view: FleetView, share: str | None = None) -> None:
    topics = subscriptions(view, share)
    client.on_message = lambda c, u, msg: view.handle(msg.topic, bytes(msg.payload), time.time())

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


def render_table(view: FleetView, filters: Filters | None = None) -> Any:
    """Every device (no height limit), with the per-version table: `monitor --once`."""
    from edgefleet.fleet.live_view import EVERY, render

    return render(view, filters or EVERY)


def watch(client: mqtt.Client, topics: Topics, filters: Filters | None = None, share: str | None = None,
          prometheus: str | None = None, publish_alerts: bool = False, history: str | None = None,
          history_every_s: float = 10.0) -> None:
    """Live view until Ctrl-C; PROMETHEUS: also serve the metrics there (exporter.py);
    PUBLISH_ALERTS: publish the alerts on <prefix>/alerts/... (alerts.py); HISTORY: record there
    (history.py; "" the default file, None nothing)."""
    from edgefleet.fleet.alerts import publishing_book
    from edgefleet.fleet.live_view import EVERY
    from edgefleet.fleet.live_view import watch as live

    view = FleetView(topics)
    store = None
    if history is not None:
        from edgefleet.fleet.history import History, recorder

        store = History(history or None).start()
        view.listeners.append(recorder(store, history_every_s))
    attach(client, view, share)
    book = publishing_book(client, topics.prefix) if publish_alerts else None
    server = None
    if prometheus:
        from edgefleet.fleet.exporter import serve

        server = serve(view, prometheus)
    try:
        live(view, filters or EVERY, book=book)
    finally:
        if server is not None:
            server.shutdown()
        if store is not None:
            store.close()


def snapshot_json(view: FleetView) -> str:
    return json.dumps(view.snapshot(), indent=2)
