"""Compatibility before download (issue 10, item 5): what a bundle needs of the device
(runtime and its version, Python, NumPy, the target's delegate library) is checked from the
signed transfer manifest, and a mismatch is refused with the reason before any chunk."""

from __future__ import annotations

import platform

import numpy as np
import pytest

from edgefleet.compat import DEFAULT_REQUIRES, refusal, requires_of
from edgefleet.fleet.connection import close, connect
from edgefleet.fleet.publish import publish_bundle
from edgefleet.protocol.topics import Topics
from edgefleet.runtime import find_runtime
from tests.support import AgentProcess, Watcher, is_active, signed_variant

LITERT = ("ai-edge-litert", "2.3.0")


@pytest.mark.parametrize("requires, words", [
    ({"runtimes": {"ai-edge-litert": ">=99"}}, "needs ai-edge-litert >=99, this device has 2.3.0"),
    ({"runtimes": {"tflite-runtime": ">=2.14"}}, "runs on tflite-runtime; this device runs ai-edge-"),
    ({"python": ">=4"}, "the bundle needs python >=4, this device has 3.11.7"),
    ({"numpy": "<2"}, "the bundle needs numpy <2, this device has 2.1.0"),
    ({"numpy": "two"}, "'two' is not a PEP 440 version specifier"),
    ({"python": 3}, "is 3, not a version specifier"),
])
def test_a_requirement_the_device_does_not_meet_is_named(requires, words):
    assert words in refusal(requires, LITERT, "3.11.7", "2.1.0")


def test_what_the_converter_writes_fits_this_machine_and_old_bundles_are_read_too():
    runtime = find_runtime()
    assert refusal(DEFAULT_REQUIRES, (runtime.name, runtime.version), platform.python_version(),
                   np.__version__) is None
    assert refusal({"future_key": "x"}, LITERT, "3.11.7", "2.1.0") is None  # newer publishers
    old = {"runtime": {"min_versions": {"ai-edge-litert": "1.2.0"}}}
    assert requires_of(old) == {"runtimes": {"ai-edge-litert": ">=1.2.0"}} and requires_of({}) == {}


@pytest.mark.slow
@pytest.mark.parametrize("changes, words", [
    ({"requires": {**DEFAULT_REQUIRES, "numpy": "<1"}}, "the bundle needs numpy <1"),
    ({"requires": {"runtimes": {"ai-edge-litert": ">=99", "tflite-runtime": ">=99"}}},
     ">=99, this device has"),
    ({"requires": {"python": "<3"}}, "the bundle needs python <3"),
])
def test_an_incompatible_bundle_is_refused_from_its_manifest_before_any_chunk(
        tmp_path, broker, prefix, keys, tiny, changes, words):
    topics = Topics(prefix)
    device = "pi-compat"
    bundle = signed_variant(tiny.bundle, tmp_path / "b.efb", keys, "2", changes=changes)
    watcher = Watcher(broker.address, [topics.reported(device)])
    agent = AgentProcess(tmp_path, device, broker.address, prefix, keys.trust_dir).start()
    client = connect(broker.address, "test")
    try:
        ok = publish_bundle(client, topics, tiny.bundle, keys.key, devices=[device]).bundle_id
        watcher.wait_for(topics.reported(device), is_active(ok), 60)
        bundle_id = publish_bundle(client, topics, bundle, keys.key, devices=[device]).bundle_id
        failed = watcher.wait_for(topics.reported(device), lambda r: (r.get("install") or {}).get(
            "bundle_id") == bundle_id and r["install"]["state"] == "failed", 30)
        assert failed["install"]["stage"] == "manifest"
        assert "not for this device" in failed["install"]["reason"] and words in failed["install"]["reason"]
        assert not (agent.state_dir / "downloads" / bundle_id / "bundle.part").exists()
        assert failed["active"]["bundle_id"] == ok
    finally:
        close(client)
        code = agent.stop()
        watcher.close()
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()
