"""Store and rollback (issue 10, item 4), on a real agent and Mosquitto: `edgefleet rollback`
sends a group back to the bundle each device ran before, from its disk, and the same
rollback means the same after a restart; `edgefleet desired clear`; bundles over the
device's limits are refused before any chunk is fetched."""

from __future__ import annotations

import json
import time

import pytest

from edgefleet.fleet.connection import close, connect
from edgefleet.fleet.publish import publish_bundle
from edgefleet.protocol.topics import Topics
from tests.support import AgentProcess, Watcher, http_infer, is_active, npy_bytes, run_cli, signed_variant

pytestmark = pytest.mark.slow
DEVICE = "pi-back"


def _cli(*args: str) -> dict:
    proc = run_cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_rollback_of_a_group_goes_back_from_disk_and_stays_back_after_a_restart(
        tmp_path, broker, prefix, keys, tiny):
    topics = Topics(prefix)
    v2 = signed_variant(tiny.bundle, tmp_path / "v2.efb", keys, "2")
    watcher = Watcher(broker.address, [topics.reported(DEVICE)])
    agent = AgentProcess(tmp_path, DEVICE, broker.address, prefix, keys.trust_dir,
                         groups=("kitchen",)).start()
    where = ("--broker", broker.address, "--prefix", prefix)
    try:
        # nothing to go back to yet: said, and the model keeps serving
        b1 = _cli("publish", str(tiny.bundle), "--group", "kitchen", "--key", str(keys.private), *where)
        watcher.wait_for(topics.reported(DEVICE), is_active(b1["bundle_id"]), 60)
        _cli("rollback", "--group", "kitchen", "--key", str(keys.private), *where)
        watcher.wait_for(topics.reported(DEVICE), lambda r: (r.get("last_error") or {}).get(
            "stage") == "desired" and "this device keeps none" in r["last_error"]["reason"], 30)

        b2 = _cli("publish", str(v2), "--group", "kitchen", "--key", str(keys.private), *where)
        watcher.wait_for(topics.reported(DEVICE), is_active(b2["bundle_id"]), 60)
        client = connect(broker.address, "test")  # v1 gone from the broker: only the disk has it
        client.publish(topics.bundle_manifest(b1["bundle_id"]), b"", qos=1, retain=True).wait_for_publish(10)
        close(client)
        sent = _cli("rollback", "--group", "kitchen", "--key", str(keys.private), *where)
        assert sent["topics"] == [topics.group_desired("kitchen")]
        back = watcher.wait_for(topics.reported(DEVICE), is_active(b1["bundle_id"]), 60)
        assert back["desired"] == {"bundle_id": b1["bundle_id"], "source": "group:kitchen",
                                   "signed_by": keys.key.key_id}
        assert back["previous"] == b2["bundle_id"]

        # the same rollback, delivered again after a restart, still means v1 (not "the one before")
        assert agent.stop() == 0
        restarted = time.time()
        agent.start()
        again = watcher.wait_for(topics.reported(DEVICE), lambda r: r["ts"] > restarted
                                 and r["desired"]["bundle_id"] is not None, 30)
        assert again["desired"]["bundle_id"] == b1["bundle_id"]
        status, answer = http_infer(agent.http_port, npy_bytes(tiny.x[:3]))
        assert status == 200 and answer["bundle_id"] == b1["bundle_id"]

        _cli("desired", "clear", "--group", "kitchen", *where)
        cleared = watcher.wait_for(topics.reported(DEVICE), lambda r: r["desired"]["bundle_id"] is None, 30)
        assert cleared["active"]["bundle_id"] == b1["bundle_id"]  # it keeps running what it runs
    finally:
        code = agent.stop()
        watcher.close()
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()


@pytest.mark.parametrize("limit, words", [
    ("max_bundle_mib = 0.001", "over this device's [delivery] max_bundle_mib (0.001 MiB)"),
    ("max_chunks = 2", "over this device's [delivery] max_chunks (2)"),
])
def test_a_bundle_over_the_device_s_limits_is_refused_before_any_chunk(tmp_path, broker, prefix, keys, tiny,
                                                                       limit, words):
    topics = Topics(prefix)
    watcher = Watcher(broker.address, [topics.reported(DEVICE)])
    agent = AgentProcess(tmp_path, DEVICE, broker.address, prefix, keys.trust_dir,
                         extra_toml=f"{limit}\n").start()  # into [delivery], the config's last section
    client = connect(broker.address, "test")
    try:
        bundle_id = publish_bundle(client, topics, tiny.bundle, keys.key, devices=[DEVICE],
                                   chunk_size=1024).bundle_id
        failed = watcher.wait_for(topics.reported(DEVICE), lambda r: (r.get("install") or {}).get(
            "state") == "failed", 30)
        assert failed["install"]["stage"] == "manifest" and words in failed["install"]["reason"]
        assert "refused before any chunk was fetched" in failed["install"]["reason"]
        assert not (agent.state_dir / "downloads" / bundle_id / "bundle.part").exists()
    finally:
        close(client)
        code = agent.stop()
        watcher.close()
    assert code == 0, agent.log_text()
