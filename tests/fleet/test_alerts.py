"""Fleet alerts: each kind raised on the device it concerns and no other, shown in the live
view, served to Prometheus, and published retained on the alerts topic by a running exporter
against real Mosquitto (set while they hold, cleared when they end)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import orjson
import paho.mqtt.client as mqtt
from rich.console import Console

from edgefleet.devices.profiles import load_profile
from edgefleet.fleet.alerts import SCHEMA, AlertBook, evaluate
from edgefleet.fleet.broker import free_port
from edgefleet.fleet.exporter import FleetCollector
from edgefleet.fleet.fleet_view import FleetView, versions
from edgefleet.fleet.live_view import render_devices
from edgefleet.fleet.sim_device import Behaviour, SimDevice
from edgefleet.protocol.desired import BundleRef
from edgefleet.protocol.topics import Topics
from tests.support import ROOT, wait_port

T = Topics("p")
V1, V2 = BundleRef("m", "1", "1" * 64), BundleRef("m", "2", "2" * 64)


def _fleet() -> FleetView:
    """Six devices on v1 (and one failing to install v2): one slower, one hungrier, one throttled,
    one that fell back to the CPU, one offline."""
    view = FleetView(T)
    devices = {name: SimDevice(name, load_profile("rpi4" if name != "tpu" else "coral-devboard"), ["g"], V1,
                               Behaviour(**extra), rate_per_s=30.0, seed=n)  # type: ignore[arg-type]
               for n, (name, extra) in enumerate([
                   ("ok-1", {}), ("ok-2", {}), ("ok-3", {}), ("slow", {"slower": {"1": 4.0}}),
                   ("hungry", {"hungrier": {"1": 3.0}}), ("hot", {}), ("tpu", {}), ("gone", {}),
                   ("broken", {"fail": frozenset({"2"}), "install_s": 0.0})])}
    devices["broken"].want("device", V2, "k")
    devices["broken"].advance(time.time() + 1)
    now = time.time()
    for name, d in devices.items():
        view.handle(T.status(name), d.status())
        view.handle(T.reported(name), d.reported())
        for k in range(12):
            body = orjson.loads(d.telemetry(now + k + 1))
            if name == "hot":
                body["system"]["throttling"] = {"throttled": True, "under_voltage": False}
            if name == "tpu":
                body["delegate"].update(active="cpu", on_cpu=True,
                                        fallback_reason="libedgetpu.so.1 did not load")
            view.handle(T.telemetry(name), orjson.dumps(body), now + k + 1)
    view.handle(T.status("gone"), devices["gone"].will())
    return view


def test_each_alert_is_raised_on_its_device_only():
    view = _fleet()
    got = {(a["device_id"], a["kind"]) for a in evaluate(view, versions(view))}
    assert got == {("slow", "latency_regression"), ("hungry", "energy_regression"), ("hot", "throttled"),
                   ("tpu", "cpu_fallback"), ("gone", "offline"), ("broken", "install_failed")}, got


def test_the_live_view_shows_alerts_under_their_device_and_counts_them():
    view = _fleet()
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(render_devices(view))
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    slow = next(i for i, line in enumerate(lines) if line.startswith("slow"))
    assert lines[slow + 1].strip().startswith("⚠ latency_regression: slow: p95")
    tpu = next(i for i, line in enumerate(lines) if line.startswith("tpu"))
    assert "⚠ cpu_fallback" in lines[tpu + 1]
    counted = "alerts: 1 cpu_fallback, 1 energy_regression, 1 install_failed, 1 latency_regression, 1 offline"
    assert counted + ", 1 throttled" in " ".join(" ".join(lines).split())  # the footer may wrap


def test_alerts_are_a_prometheus_metric():
    view = _fleet()
    [family] = [f for f in FleetCollector(view).collect() if f.name == "edgefleet_alert"]
    got = {(s.labels["device"], s.labels["kind"], s.labels["severity"]) for s in family.samples}
    assert ("tpu", "cpu_fallback", "critical") in got and len(got) == 6


def test_the_book_publishes_what_starts_and_clears_what_ends():
    sent: list[tuple[str, bytes]] = []
    book = AlertBook("p", lambda topic, payload: sent.append((topic, payload)))
    a = {"kind": "offline", "device_id": "d1", "severity": "warning", "summary": "d1 is offline",
         "figures": {}}
    book.update([a], now=100.0)
    book.update([{**a, "summary": "d1 is offline, last heard from 9 s ago"}], now=101.0)
    assert [t for t, _ in sent] == ["p/alerts/d1/offline"]  # once, when it started
    body = orjson.loads(sent[0][1])
    assert body["schema"] == SCHEMA and body["since"] == 100.0 and body["state"] == "firing"
    assert book.update([], now=102.0) == [] and sent[-1] == ("p/alerts/d1/offline", b"")


def test_a_running_exporter_publishes_alerts_retained_and_clears_them(broker, prefix):
    common = ["--broker", broker.address, "--prefix", prefix, "--interval", "0.3", "--profiles", "rpi4"]
    edgefleet = [sys.executable, "-m", "edgefleet"]
    normal = subprocess.Popen([*edgefleet, "simulate", "--devices", "3", "--id-prefix", "ok", *common],
                              stdout=subprocess.DEVNULL, cwd=ROOT)
    slow = subprocess.Popen([*edgefleet, "simulate", "--devices", "1", "--id-prefix", "slow", "--slower",
                             "1=5", *common], stdout=subprocess.DEVNULL, cwd=ROOT)
    port = free_port()
    exporter = subprocess.Popen([*edgefleet, "exporter", "--listen", f"127.0.0.1:{port}", "--publish-alerts",
                                 "--alert-interval", "0.5", "--broker", broker.address, "--prefix", prefix],
                                stdout=subprocess.DEVNULL, cwd=ROOT)
    seen: dict[str, bytes] = {}
    changed = threading.Condition()

    def on_message(client, userdata, msg):
        with changed:
            seen[msg.topic] = bytes(msg.payload)
            changed.notify_all()

    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    watcher.on_message = on_message
    host, port_text = broker.address.rsplit(":", 1)
    watcher.connect(host, int(port_text))
    watcher.subscribe(f"{prefix}/alerts/#", qos=1)
    watcher.loop_start()
    topic = f"{prefix}/alerts/slow-00001/latency_regression"

    def wait(check, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        with changed:
            while not check():
                left = deadline - time.time()
                assert left > 0, seen
                changed.wait(left)

    try:
        wait_port("127.0.0.1", port, 30)
        wait(lambda: seen.get(topic))
        alert = orjson.loads(seen[topic])
        assert alert["kind"] == "latency_regression" and alert["device_id"] == "slow-00001"
        assert alert["figures"]["p95_ms"] > 1.5 * alert["figures"]["fleet_p95_ms"]
        assert not any(t.split("/")[-2].startswith("ok-") for t, p in seen.items() if p), seen  # others: fine
        slow.send_signal(signal.SIGKILL)  # gone: offline, and its regression is no longer judged
        wait(lambda: seen.get(f"{prefix}/alerts/slow-00001/offline") and seen.get(topic) == b"")
    finally:
        watcher.loop_stop()
        watcher.disconnect()
        for p in (exporter, normal, slow):
            if p.poll() is None:
                p.terminate()
                p.wait(15)
