"""Staged rollouts against six real agents and Mosquitto (issue 11's acceptance): a good bundle
goes through every stage, surviving the operator process killed mid-rollout; a bundle whose
self-test fails and one whose p95 latency regresses are rolled back on the canary and never
reach the other devices. The agents serve HTTP inference all along, so that every version
has latency figures."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgefleet.fleet.connection import close, connect
from edgefleet.fleet.fleet_view import FleetView
from edgefleet.fleet.monitor import attach
from edgefleet.fleet.rollout_state import RolloutStore
from edgefleet.protocol.topics import Topics
from tests.support import ROOT, AgentProcess, http_infer, npy_bytes, publish_cli, signed_variant

N = 6
GROUP = "kitchen"
FIXTURES = ROOT / "tests" / "fixtures"
# 3x: the same model measured twice on two cores shared with six agents stays well inside it,
# while the wide model is about seven times slower per inference
GATE = "p95_ms<=3x,selftest=pass,errors=0"


class Fleet:
    def __init__(self, folder: Path, broker, prefix: str, keys, tiny):
        self.folder, self.broker, self.prefix, self.keys, self.tiny = folder, broker, prefix, keys, tiny
        self.topics = Topics(prefix)
        self.ids = [f"pi-{n}" for n in range(1, N + 1)]
        self.agents = [AgentProcess(folder / d, d, broker.address, prefix, keys.trust_dir, groups=(GROUP,))
                       for d in self.ids]
        self.client = connect(broker.address, "test")
        self.view = FleetView(self.topics)
        attach(self.client, self.view)
        self.stop_load = threading.Event()
        self.states = folder / "rollouts"
        self.told: dict[str, list[bytes]] = {d: [] for d in self.ids}  # each device's own desired states
        taken = self.client.on_message

        def on_message(client, userdata, msg):
            d = self.topics.device_of(msg.topic)
            if msg.topic.endswith("/desired") and d in self.told:
                self.told[d].append(bytes(msg.payload))
            taken(client, userdata, msg)
        self.client.on_message = on_message

    def rows(self) -> dict[str, dict]:
        return {r["device_id"]: r for r in self.view.rows()}

    def wait(self, what: str, check, timeout: float = 90.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if value := check(self.rows()):
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}: {json.dumps(self.rows(), default=str)[:3000]}")

    def load(self) -> None:
        """Ten samples per request to each agent in turn, until stopped."""
        body = npy_bytes(self.tiny.x[:10])
        while not self.stop_load.is_set():
            for agent in self.agents:
                with contextlib.suppress(OSError):  # an agent stopping: the next round asks again
                    http_infer(agent.http_port, body)
            time.sleep(0.02)

    def rollout(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._cli(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT)

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "edgefleet", "rollout", *args, "--state-dir", str(self.states)]

    def start_args(self, bundle: Path) -> list[str]:
        return ["start", str(bundle), "--group", GROUP, "--stages", "10%,50%,100%", "--bake", "3s",
                "--gate", GATE, "--key", str(self.keys.private), "--broker", self.broker.address,
                "--prefix", self.prefix]

    def only(self) -> object:
        [state] = RolloutStore(self.states).all()[-1:]
        return state


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, broker, keys, tiny):
    prefix = f"rollout-{time.time_ns() % 10**8}"
    f = Fleet(tmp_path_factory.mktemp("fleet"), broker, prefix, keys, tiny)
    for agent in f.agents:
        agent.start()
    loader = threading.Thread(target=f.load, daemon=True)
    try:
        publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--group", GROUP)
        f.wait("six agents on v1", lambda rows: len(rows) == N and all(
            r["model_version"] == "1" and r["state"] == "active" for r in rows.values()))
        loader.start()
        f.wait("v1 latency figures on every device", lambda rows: all(
            (f.view.devices[d].telemetry or {}).get("inference", {}).get("latency_samples", 0) >= 100
            for d in f.ids))
        yield f
    finally:
        f.stop_load.set()
        close(f.client)
        for agent in f.agents:
            agent.stop()


def _versions(fleet: Fleet) -> dict[str, str]:
    return {d: r["model_version"] for d, r in fleet.rows().items()}


def test_a_good_bundle_goes_through_every_stage_and_survives_the_operator_killed(fleet, tmp_path):
    good = signed_variant(fleet.tiny.bundle, tmp_path / "v2.efb", fleet.keys, "2")
    runner = subprocess.Popen(fleet._cli(*fleet.start_args(good)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # killed once the canary's stage has been promoted
            states = RolloutStore(fleet.states).all()
            if states and states[-1].stage >= 1:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(runner.communicate(timeout=5))
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
    finally:
        if runner.poll() is None:
            runner.kill()
    state = fleet.only()
    assert state.phase in ("installing", "baking") and state.decisions[0]["decision"] == "promote"
    assert state.touched[:1] == ["pi-1"]
    resumed = fleet.rollout("resume", state.id, "--key", str(fleet.keys.private), "--broker",
                            fleet.broker.address)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "carrying on at stage 2/3" in resumed.stdout
    state = RolloutStore(fleet.states).load(state.id)
    assert state.phase == "done"
    assert [d["decision"] for d in state.decisions] == ["promote", "promote", "complete"]
    gate = state.decisions[0]["figures"]["pi-1"]
    assert gate["holds"] and gate["terms"]["p95_ms<=3x"]["verdict"] == "pass"
    assert gate["terms"]["p95_ms<=3x"]["old"] > 0 and gate["terms"]["p95_ms<=3x"]["new"] > 0
    fleet.wait("every device on v2", lambda rows: all(r["model_version"] == "2" for r in rows.values()))
    # the group's desired state names v2 and the devices' own were cleared
    fleet.wait("the devices following their group", lambda rows: all(
        fleet.view.devices[d].desired is None for d in fleet.ids) and all(
        r["desired_version"] == "2" for r in rows.values()))
    listed = fleet.rollout("status", state.id)
    assert "done" in listed.stdout and "complete" in listed.stdout


def _rolled_back_on_the_canary(fleet: Fleet, bundle: Path, words: str) -> None:
    before = _versions(fleet)
    proc = fleet.rollout(*fleet.start_args(bundle))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    state = fleet.only()
    assert state.phase == "rolled-back", (state.phase, state.decisions)
    assert state.touched == ["pi-1"]  # the canary only
    assert [d["decision"] for d in state.decisions] == ["roll back", "rolled back"]
    assert words in state.decisions[0]["reason"], state.decisions[0]
    fleet.wait("everyone back on what they ran", lambda rows: _versions(fleet) == before)
    new_id = state.bundle["bundle_id"].encode()
    assert any(new_id in p for p in fleet.told["pi-1"])
    assert not any(new_id in p for d in fleet.ids[1:] for p in fleet.told[d])  # never told the others
    assert all(fleet.view.devices[d].desired is None for d in fleet.ids)


def test_a_bundle_whose_self_test_fails_is_rolled_back_on_the_canary(fleet, tmp_path):
    bad = signed_variant(fleet.tiny.bundle, tmp_path / "v3.efb", fleet.keys, "3",
                         **{"model.tflite": b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64})
    _rolled_back_on_the_canary(fleet, bad, "the install failed on pi-1")


def test_a_bundle_whose_p95_regresses_is_rolled_back_on_the_canary(fleet, tmp_path):
    slow = signed_variant(FIXTURES / "tiny-digits-wide.efb", tmp_path / "v4.efb", fleet.keys, "4")
    _rolled_back_on_the_canary(fleet, slow, "the gate failed on pi-1 (p95_ms<=3x)")
    fig = fleet.only().decisions[0]["figures"]["pi-1"]["terms"]["p95_ms<=3x"]
    assert fig["new"] > 3 * fig["old"]


def test_pause_holds_a_rollout_and_abort_rolls_the_canary_back(fleet, tmp_path):
    good = signed_variant(fleet.tiny.bundle, tmp_path / "v5.efb", fleet.keys, "5")
    before = _versions(fleet)
    args = fleet.start_args(good)
    args[args.index("--bake") + 1] = "10m"
    runner = subprocess.Popen(fleet._cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        fleet.wait("the canary on v5", lambda rows: rows["pi-1"]["model_version"] == "5")
        deadline = time.time() + 30
        while fleet.only().phase != "baking" and time.time() < deadline:
            time.sleep(0.2)
        rollout_id = fleet.only().id
        assert fleet.rollout("pause", rollout_id).returncode == 0
        deadline = time.time() + 30
        while fleet.only().phase != "paused" and time.time() < deadline:
            time.sleep(0.2)
        assert fleet.only().phase == "paused"
        again = fleet.rollout("start", str(good), "--group", GROUP, "--key", str(fleet.keys.private),
                              "--broker", fleet.broker.address, "--prefix", fleet.prefix, "--bake", "1s")
        assert again.returncode == 1, again.stdout
        assert f"rollout {rollout_id} of group {GROUP} has not ended" in again.stderr
        aborted = fleet.rollout("abort", rollout_id)
        assert aborted.returncode == 0, aborted.stderr
        out, err = runner.communicate(timeout=180)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 1, out + err
    state = RolloutStore(fleet.states).load(rollout_id)
    assert state.phase == "aborted" and state.touched == ["pi-1"]
    assert [d["decision"] for d in state.decisions] == ["pause", "abort", "rolled back"]
    fleet.wait("everyone back on what they ran", lambda rows: _versions(fleet) == before)
