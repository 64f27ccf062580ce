"""The monitor on a real agent's messages, and the simulator beside it: a real agent reports
its groups, the live view shows its model and delegate, and a simulated device sends every
field the real agent sends."""

from __future__ import annotations

import time

from rich.console import Console

from edgefleet.devices.profiles import load_profile
from edgefleet.fleet.connection import close, connect
from edgefleet.fleet.fleet_view import FleetView
from edgefleet.fleet.live_view import render_devices
from edgefleet.fleet.monitor import attach
from edgefleet.fleet.sim_device import Behaviour, SimDevice
from edgefleet.protocol.desired import BundleRef
from edgefleet.protocol.topics import Topics
from tests.support import AgentProcess, http_infer, npy_bytes, publish_cli


def _keys(obj: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in obj.items():
        out.add(prefix + k)
        if isinstance(v, dict) and k not in ("api_choice", "delegated", "temperatures_c", "errors_by_kind",
                                             "detected", "selftest"):
            out |= _keys(v, prefix + k + ".")
    return out


def test_a_real_agent_in_the_live_view_and_the_simulator_sends_what_it_sends(tmp_path, broker, prefix, keys,
                                                                              tiny):
    topics = Topics(prefix)
    agent = AgentProcess(tmp_path, "pi-real", broker.address, prefix, keys.trust_dir,
                         groups=("kitchen",)).start()
    client = connect(broker.address, "test")
    view = FleetView(topics)
    attach(client, view)
    try:
        publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--group", "kitchen")
        deadline = time.time() + 60
        while time.time() < deadline:
            rows = view.rows()
            if rows and rows[0]["model_version"] and rows[0]["state"] == "active":
                break
            time.sleep(0.1)
        assert http_infer(agent.http_port, npy_bytes(tiny.x[:20]))[0] == 200
        deadline = time.time() + 30
        while time.time() < deadline and not (view.rows()[0]["latency_p50_ms"] or 0) > 0:
            time.sleep(0.1)
        row = view.rows()[0]
        assert row["groups"] == ["kitchen"] and row["status"] == "online" and row["delegate"]
        assert row["desired_version"] == row["model_version"]  # the group's desired state, followed
        console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
        console.print(render_devices(view))
        line = next(t for t in console.export_text().splitlines() if t.startswith("pi-real"))
        assert f"{row['model_name'][:6]}" in line and row["model_version"] in line and "online" in line
        real_telemetry = view.devices["pi-real"].telemetry
        real_reported = view.devices["pi-real"].reported
    finally:
        close(client)
        code = agent.stop()
    assert code == 0, agent.log_text()
    sim = SimDevice("sim", load_profile("rpi4"), ["kitchen"], BundleRef("m", "1", "1" * 64),
                    Behaviour(install_s=0.0))
    sim.want("device", BundleRef("m", "2", "2" * 64), "key")
    sim.advance(time.time() + 1)  # installed: its install record stays, as an agent's
    sim.telemetry(time.time() + 1)
    import orjson

    simulated_telemetry = orjson.loads(sim.telemetry(time.time() + 2))
    simulated_reported = orjson.loads(sim.reported())
    # the real agent has no power figure on this machine (power: reason); the simulator's has one
    missing = _keys(real_telemetry) - _keys(simulated_telemetry) - {"power.reason"}
    assert not missing, missing
    missing = _keys(real_reported) - _keys(simulated_reported)
    assert not missing, missing
