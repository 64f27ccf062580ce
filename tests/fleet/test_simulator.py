"""`edgefleet simulate` against a real Mosquitto: devices that speak the protocol (status with
a last will, reported, telemetry v2 with every documented field, inference answers), follow
signed desired states and install as told (fail, slower), and vanish from the monitor with
`edgefleet devices forget`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import numpy as np

from edgefleet.fleet.connection import close, connect
from edgefleet.fleet.fleet_view import FleetView
from edgefleet.fleet.infer_client import MqttInferClient
from edgefleet.fleet.monitor import attach
from edgefleet.protocol.desired import BundleRef, desired_payload
from edgefleet.protocol.topics import Topics
from tests.support import ROOT, run_cli


def _wait(what: str, check, timeout: float = 20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _simulate(broker, prefix: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edgefleet", "simulate", "--broker", broker.address,
                             "--prefix", prefix, "--json", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _documented(section: str) -> dict:
    """The first JSON example under SECTION in docs/protocol.md."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    after = text[text.index(f"### {section}"):]
    return json.loads(re.search(r"```json\n(.*?)```", after, re.DOTALL).group(1))


def _keys(obj: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in obj.items():
        out.add(prefix + k)
        if isinstance(v, dict) and k not in ("api_choice", "delegated", "temperatures_c", "errors_by_kind"):
            out |= _keys(v, prefix + k + ".")
    return out


def test_simulated_devices_speak_the_protocol_and_install_as_told(tmp_path, broker, prefix, keys):
    sim = _simulate(broker, prefix, "--devices", "6", "--groups", "good,bad", "--interval", "0.3",
                    "--install-s", "0.5", "--slower", "2=3", "--fail-version", "3",
                    "--profiles", "rpi4", "--trust", str(keys.trust_dir))
    client = connect(broker.address, "test")
    view = FleetView(Topics(prefix))
    attach(client, view)
    try:
        rows = _wait("6 devices online with telemetry", lambda: (
            r := view.rows()) and len(r) == 6 and all(x["status"] == "online" and x["latency_p50_ms"]
                                                         for x in r) and r)
        assert {x["model_version"] for x in rows} == {"1"} and all(x["simulated"] for x in rows)
        # every field the protocol documents for telemetry and reported is there
        some = view.devices[rows[0]["device_id"]]
        assert _keys(_documented("Telemetry")) <= _keys(some.telemetry)
        assert {k for k in _documented("Reported state")} <= set(some.reported)
        before = {x["device_id"]: x["latency_p50_ms"] for x in rows}
        # signed desired states: group good gets v2 (slower), group bad v3 (fails its self-test)
        topics = Topics(prefix)
        v2, v3 = BundleRef("digits", "2", "2" * 64), BundleRef("digits", "3", "3" * 64)
        for group, bundle in (("good", v2), ("bad", v3)):
            client.publish(topics.group_desired(group), desired_payload(keys.key, "group", group, bundle),
                           qos=1, retain=True).wait_for_publish(5)
        good = [x["device_id"] for x in rows if x["groups"] == ["good"]]
        bad = [x["device_id"] for x in rows if x["groups"] == ["bad"]]
        assert len(good) == len(bad) == 3

        def settled() -> bool:
            now = {x["device_id"]: x for x in view.rows()}
            return all(now[d]["model_version"] == "2" and now[d]["latency_p50_ms"] for d in good) and all(
                now[d]["install"] == "failed" for d in bad)
        _wait("good on v2, bad failed", settled)
        time.sleep(1.5)  # telemetry of v2 with enough inferences
        now = {x["device_id"]: x for x in view.rows()}
        for d in good:
            assert now[d]["latency_p50_ms"] > 2 * before[d], (now[d], before[d])  # --slower 2=3
            assert now[d]["desired_version"] == "2"
        for d in bad:
            assert now[d]["model_version"] == "1" and "self-test" in now[d]["last_error"]
        # a desired state signed by a key the devices do not trust changes nothing
        from edgefleet.protocol.signing import SigningKey, generate_keypair

        other, _ = generate_keypair(tmp_path / "other")
        forged = desired_payload(SigningKey.load(other), "group", "good", BundleRef("digits", "9", "9" * 64))
        client.publish(topics.group_desired("good"), forged, qos=1, retain=True).wait_for_publish(5)
        time.sleep(1.5)
        assert all(x["model_version"] == "2" for x in view.rows() if x["device_id"] in good)
        # an inference answer, on the asker's own reply topic
        answer = MqttInferClient(client, topics, good[0]).infer(np.zeros((1, 8, 8, 1), np.float32))
        assert answer["bundle_id"] == v2.bundle_id and len(answer["outputs"]["scores"][0]) == 10
        # killed: the broker publishes each device's last will
        sim.send_signal(signal.SIGKILL)
        sim.wait(10)
        _wait("every device offline", lambda: all(x["status"] == "offline" for x in view.rows()))
    finally:
        if sim.poll() is None:
            sim.kill()
        close(client)


def test_a_stopped_simulation_says_stopped_and_forget_clears_it(broker, prefix):
    sim = _simulate(broker, prefix, "--devices", "3", "--interval", "0.2", "--duration", "1.5")
    out, err = sim.communicate(timeout=60)
    assert sim.returncode == 0, err
    counts = json.loads(out)
    assert counts["devices"] == 3 and counts["telemetry"] >= 3 * 5
    listed = json.loads(run_cli("monitor", "--once", "--json", "--wait", "2", "--broker", broker.address,
                                "--prefix", prefix).stdout)
    assert sorted(r["status"] for r in listed["devices"]) == ["stopped"] * 3
    dry = run_cli("devices", "forget", "--offline-for", "0s", "--dry-run", "--json", "--broker",
                  broker.address, "--prefix", prefix)
    assert dry.returncode == 0, dry.stderr
    assert len(json.loads(dry.stdout)["devices"]) == 3 and json.loads(dry.stdout)["cleared_topics"] == []
    done = run_cli("devices", "forget", "sim-00001", "--broker", broker.address, "--prefix", prefix)
    assert done.returncode == 0 and "forgot sim-00001 (stopped" in done.stdout, done.stdout + done.stderr
    listed = json.loads(run_cli("monitor", "--once", "--json", "--wait", "2", "--broker", broker.address,
                                "--prefix", prefix).stdout)
    assert sorted(r["device_id"] for r in listed["devices"]) == ["sim-00002", "sim-00003"]
    refused = run_cli("devices", "forget", "--broker", broker.address, "--prefix", prefix)
    assert refused.returncode == 2 and "--offline-for" in refused.stderr


def test_simulate_refuses_bad_options_with_what_to_give(broker, prefix):
    for args, says in ((["--profiles", "nope"], "nope"), (["--slower", "2"], "VERSION=FACTOR"),
                       (["--model", "digits"], "NAME:VERSION")):
        proc = run_cli("simulate", "--devices", "1", "--duration", "0", "--broker", broker.address, *args)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    from edgefleet.fleet.broker import free_port

    proc = run_cli("simulate", "--devices", "1", "--duration", "0", "--broker", f"127.0.0.1:{free_port()}")
    assert proc.returncode == 1 and "cannot reach the MQTT broker" in proc.stderr, proc.stderr
