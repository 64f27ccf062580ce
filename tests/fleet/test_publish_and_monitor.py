"""Publishing puts everything a device needs on retained topics; the monitor reads
what devices send and shrugs off what it cannot read."""

from __future__ import annotations

import json
import os
import time

import pytest

from edgefleet.fleet.connection import BrokerError, close, connect
from edgefleet.fleet.monitor import FleetView
from edgefleet.fleet.publish import publish_bundle
from edgefleet.protocol import messages
from edgefleet.protocol.bundle import write_bundle
from edgefleet.protocol.delivery import parse_transfer_manifest
from edgefleet.protocol.desired import parse_desired
from edgefleet.protocol.signing import TrustStore
from edgefleet.protocol.topics import Topics
from tests.support import Watcher


@pytest.fixture
def bundle_file(tmp_path, keys):
    files = {"model.tflite": os.urandom(150_000), "golden.npz": b"g"}
    path = tmp_path / "toy.efb"
    write_bundle(path, {"name": "toy", "version": "7", "model": {"file": "model.tflite"}}, files,
                 keys.key)
    return path


def test_publish_leaves_manifest_chunks_and_desired_retained(broker, prefix, keys, bundle_file):
    key, trust_dir = keys.key, keys.trust_dir
    topics = Topics(prefix)
    client = connect(broker.address, "test")
    try:
        result = publish_bundle(client, topics, bundle_file, key, devices=["d1"], groups=["g1"],
                                chunk_size=32 * 1024)
    finally:
        close(client)
    assert result.chunks == -(-bundle_file.stat().st_size // (32 * 1024))
    # a device arriving later finds everything on the broker alone
    late = Watcher(broker.address, [f"{prefix}/#"])
    try:
        deadline = time.monotonic() + 10
        want = 3 + result.chunks
        while len(late.latest) < want and time.monotonic() < deadline:
            time.sleep(0.05)
        manifest = parse_transfer_manifest(late.latest[topics.bundle_manifest(result.bundle_id)],
                                           TrustStore.from_folder(trust_dir), result.bundle_id)
        data = b"".join(late.latest[topics.bundle_chunk(result.bundle_id, i)]
                        for i in range(manifest.chunk_count))
        assert data == bundle_file.read_bytes()
        assert all(retained for _, _, retained in late.messages)
        trust = TrustStore.from_folder(trust_dir)
        for kind, name, topic in (("device", "d1", topics.device_desired("d1")),
                                  ("group", "g1", topics.group_desired("g1"))):
            wanted = parse_desired(late.latest[topic], trust, kind, name)
            assert wanted.bundle_id == result.bundle_id and wanted.signed_by == key.key_id
            assert not wanted.rollback
    finally:
        late.close()


def test_publish_refuses_bad_target_ids(broker, prefix, keys, bundle_file):
    client = connect(broker.address, "test")
    try:
        with pytest.raises(ValueError, match="device id"):
            publish_bundle(client, Topics(prefix), bundle_file, keys.key, devices=["a/#"])
    finally:
        close(client)


def test_unreachable_broker_error_says_what_to_do():
    from edgefleet.fleet.broker import free_port

    with pytest.raises(BrokerError, match=r"cannot reach the MQTT broker.*--broker"):
        connect(f"127.0.0.1:{free_port()}", "test", timeout=2)


def test_monitor_view_summarises_and_ignores_garbage():
    view = FleetView(Topics("p"))
    view.handle("p/devices/d1/status", messages.status_payload("online"))
    view.handle("p/devices/d1/telemetry", json.dumps({
        "inference": {"count_total": 5, "latency_p50_ms": 1.5},
        "system": {"rss_bytes": 1000}, "runtime": {"name": "ai-edge-litert"}}).encode())
    for topic, payload in [("p/devices/d2/status", b"\xff\xfe"), ("p/devices/d3/telemetry", b"[1,2]"),
                           ("p/other/x", b"{}"), ("p/devices/d1/unknown", b"{}")]:
        view.handle(topic, payload)
    rows = view.snapshot()["devices"]
    assert [r["device_id"] for r in rows] == ["d1"]
    assert rows[0]["inference_count"] == 5 and rows[0]["status"] == "online"
    assert view.complete()


def test_monitor_table_shows_markup_and_odd_ids_as_text():
    from rich.console import Console

    from edgefleet.fleet.monitor import render_table

    view = FleetView(Topics("p"))
    view.handle("p/devices/[bold]pi/status", messages.status_payload("online"))
    view.handle("p/devices/[bold]pi/reported", json.dumps({
        "state": "active", "last_error": {"reason": "desired state schema '[/x]' is wrong"},
        "active": {"name": "[red]m", "version": "1"}}).encode())
    console = Console(width=100, record=True)
    console.print(render_table(view))  # a device's text is never taken for markup
    text = console.export_text()
    assert "[bold]pi" in text and "[/x]" in text and "[red]m" in text


def test_publish_refuses_a_damaged_bundle(broker, prefix, keys, bundle_file):
    from edgefleet.protocol.bundle import BundleError

    data = bytearray(bundle_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    bundle_file.write_bytes(bytes(data))
    client = connect(broker.address, "test")
    try:
        with pytest.raises(BundleError):
            publish_bundle(client, Topics(prefix), bundle_file, keys.key, devices=["d1"])
    finally:
        close(client)


def test_monitor_snapshot_is_not_marked_disconnected_by_its_own_clean_close(broker, prefix):
    from edgefleet.fleet.monitor import collect

    client = connect(broker.address, "test")
    try:
        view = collect(client, Topics(prefix), wait_s=0.2)
    finally:
        close(client)
    assert view.connected
