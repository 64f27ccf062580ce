"""`edgefleet gc` against the private Mosquitto (issue 10, item 4): the retained bundles that
no desired state and no device names go, manifest and every chunk; the others stay."""

from __future__ import annotations

import json
import time

from edgefleet.fleet.connection import close, connect
from edgefleet.fleet.publish import publish_bundle
from edgefleet.protocol import messages
from edgefleet.protocol.topics import Topics
from tests.support import Watcher, desired, run_cli, signed_variant


def _retained_bundles(address: str, topics: Topics) -> dict[str, int]:
    """Bundle id -> how many of its topics (manifest and chunks) the broker retains."""
    late = Watcher(address, [f"{topics.prefix}/bundles/#"])
    try:
        time.sleep(1.0)
        counts: dict[str, int] = {}
        for topic, payload, retained in late.messages:
            if retained and payload:
                bundle_id = topic.split("/")[2]
                counts[bundle_id] = counts.get(bundle_id, 0) + 1
        return counts
    finally:
        late.close()


def test_gc_removes_only_the_bundles_nothing_names(tmp_path, broker, prefix, keys, tiny):
    topics = Topics(prefix)
    bundles = [signed_variant(tiny.bundle, tmp_path / f"v{v}.efb", keys, str(v)) for v in (1, 2, 3, 4)]
    client = connect(broker.address, "test")
    try:
        ids = [publish_bundle(client, topics, b, keys.key, chunk_size=4096).bundle_id for b in bundles]
        first = publish_bundle(client, topics, bundles[0], keys.key, devices=["d1"], chunk_size=4096)
        reported = messages.dumps({"schema": messages.REPORTED, "device_id": "d2",
                                   "active": {"bundle_id": ids[1]}, "previous": None, "install": None})
        client.publish(topics.reported("d2"), reported, qos=1, retain=True).wait_for_publish(10)
        client.publish(topics.device_desired("d3"), desired(keys.key, "d3", first), qos=1,
                       retain=True).wait_for_publish(10)
    finally:
        close(client)
    before = _retained_bundles(broker.address, topics)
    assert set(before) == set(ids) and before[ids[3]] > 2  # a manifest and several chunks each

    where = ("--broker", broker.address, "--prefix", prefix, "--json")
    dry = run_cli("gc", "--dry-run", *where)
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert [b["bundle_id"] for b in planned["would_remove"]] == sorted(ids[2:])
    assert {k: sorted(v) for k, v in planned["kept"].items()} == {
        ids[0]: ["device d1 desired", "device d3 desired"], ids[1]: ["device d2 active"]}
    assert _retained_bundles(broker.address, topics) == before  # a dry run removes nothing

    done = run_cli("gc", *where)
    assert done.returncode == 0, done.stderr
    removed = json.loads(done.stdout)["removed"]
    assert {b["bundle_id"] for b in removed} == set(ids[2:]) and all(b["chunks"] > 1 for b in removed)
    after = _retained_bundles(broker.address, topics)
    assert after == {ids[0]: before[ids[0]], ids[1]: before[ids[1]]}
    text = run_cli("gc", "--broker", broker.address, "--prefix", prefix)
    assert text.returncode == 0 and "removed 0 bundle(s), kept 2" in text.stdout, text.stdout
