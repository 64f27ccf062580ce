"""Bad input gets a clear reason on `reported` and loses nothing: the agent keeps
serving the model it had and stays up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgefleet.fleet.connection import close, connect
from edgefleet.fleet.infer_client import InferenceFailed, MqttInferClient
from edgefleet.protocol import messages
from edgefleet.protocol.bundle import open_bundle
from edgefleet.protocol.delivery import build_transfer_manifest
from edgefleet.protocol.signing import TrustStore
from edgefleet.protocol.topics import Topics
from tests.support import (
    GHOST,
    AgentProcess,
    Watcher,
    desired,
    http_infer,
    is_active,
    npy_bytes,
    publish_cli,
    run_cli,
    signed_variant,
)

pytestmark = pytest.mark.slow
DEVICE = "pi-bad"


def rebuild(src: Path, dst: Path, keys, version: str) -> Path:
    """Same model, another version: a second valid bundle without running TensorFlow."""
    return signed_variant(src, dst, keys, version)


@pytest.fixture
def running(tmp_path, broker, prefix, keys, tiny):
    """An agent serving the tiny digits model, v1."""
    topics = Topics(prefix)
    watcher = Watcher(broker.address, [topics.reported(DEVICE), topics.status(DEVICE),
                                       topics.response(DEVICE, "infer")])
    agent = AgentProcess(tmp_path, DEVICE, broker.address, prefix, keys.trust_dir).start()
    v1 = publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--device", DEVICE)
    watcher.wait_for(topics.reported(DEVICE), is_active(v1["bundle_id"]), 60)
    yield topics, watcher, agent, v1["bundle_id"]
    code = agent.stop()
    watcher.close()
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()


def still_serves(agent: AgentProcess, tiny, bundle_id: str) -> None:
    x = tiny.x[:20]
    status, answer = http_infer(agent.http_port, npy_bytes(x))
    assert status == 200 and answer["bundle_id"] == bundle_id


def test_bundle_with_one_flipped_byte_is_refused_and_old_model_keeps_serving(
        tmp_path, broker, keys, tiny, running):
    topics, watcher, agent, v1 = running
    v2 = rebuild(tiny.bundle, tmp_path / "v2.efb", keys, "2")
    data = bytearray(v2.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside model.tflite (stored: its hash, not a CRC, catches it)
    v2.write_bytes(bytes(data))
    # `edgefleet publish` refuses it...
    refused = run_cli("publish", str(v2), "--broker", broker.address, "--prefix", topics.prefix,
                      "--key", str(keys.private), "--device", DEVICE)
    assert refused.returncode == 1 and "damaged" in refused.stderr + refused.stdout
    # ...so it arrives as from a publisher that signs the transfer of whatever it is given
    # (an old or foreign tool): the bundle's own signature and hashes must catch it on the device
    payload, chunks = build_transfer_manifest(bytes(data), "tiny-digits", "2", keys.key)
    bundle_id = payload["body"]["bundle_id"]
    client = connect(broker.address, "test")
    try:
        for i, chunk in enumerate(chunks):
            client.publish(topics.bundle_chunk(bundle_id, i), chunk, qos=1, retain=True).wait_for_publish(10)
        client.publish(topics.bundle_manifest(bundle_id), messages.dumps(payload), qos=1,
                       retain=True).wait_for_publish(10)
        client.publish(topics.device_desired(DEVICE), desired(keys.key, DEVICE, payload["body"]), qos=1,
                       retain=True).wait_for_publish(10)
    finally:
        close(client)
    pub = {"bundle_id": bundle_id}
    reported = watcher.wait_for(
        topics.reported(DEVICE),
        lambda r: (r.get("install") or {}).get("bundle_id") == pub["bundle_id"]
        and r["install"]["state"] == "failed", 60)
    assert reported["install"]["stage"] == "verify"
    assert "model.tflite" in reported["install"]["reason"] or "damaged" in reported["install"]["reason"]
    assert reported["active"]["bundle_id"] == v1
    assert reported["last_error"]["bundle_id"] == pub["bundle_id"]
    still_serves(agent, tiny, v1)


def test_damaged_chunk_on_broker_fails_then_resumes_when_republished(
        tmp_path, broker, keys, tiny, running):
    topics, watcher, agent, v1 = running
    v3 = rebuild(tiny.bundle, tmp_path / "v3.efb", keys, "3")
    payload, chunks = build_transfer_manifest(v3.read_bytes(), "tiny-digits", "3", keys.key, chunk_size=2048)
    bundle_id = payload["body"]["bundle_id"]
    assert len(chunks) > 3
    client = connect(broker.address, "test")
    try:
        def put(topic: str, body: bytes) -> None:
            client.publish(topic, body, qos=1, retain=True).wait_for_publish(10)

        for i, chunk in enumerate(chunks):
            put(topics.bundle_chunk(bundle_id, i), chunk if i != 2 else chunk[:-1] + bytes([chunk[-1] ^ 1]))
        put(topics.bundle_manifest(bundle_id), messages.dumps(payload))
        put(topics.device_desired(DEVICE), desired(keys.key, DEVICE, payload["body"]))
        failed = watcher.wait_for(
            topics.reported(DEVICE),
            lambda r: (r.get("install") or {}).get("state") == "failed"
            and r["install"]["bundle_id"] == bundle_id, 60)
        assert "chunk 2 failed its SHA-256 check" in failed["install"]["reason"]
        assert failed["active"]["bundle_id"] == v1
        still_serves(agent, tiny, v1)

        # the operator fixes the chunk and asks again: only what is missing is fetched
        put(topics.bundle_chunk(bundle_id, 2), chunks[2])
        put(topics.device_desired(DEVICE), desired(keys.key, DEVICE, payload["body"]))
        watcher.wait_for(topics.reported(DEVICE), is_active(bundle_id), 60)
        still_serves(agent, tiny, bundle_id)
    finally:
        close(client)


def test_malformed_messages_never_stop_the_agent(broker, tiny, running):
    topics, watcher, agent, v1 = running
    client = connect(broker.address, "test")
    try:
        client.publish(topics.device_desired(DEVICE), b"{not json", qos=1, retain=True).wait_for_publish(10)
        reported = watcher.wait_for(
            topics.reported(DEVICE),
            lambda r: "desired state ignored" in ((r.get("last_error") or {}).get("reason") or ""), 30)
        assert reported["active"]["bundle_id"] == v1
        client.publish(topics.device_desired(DEVICE), b"", qos=1, retain=True).wait_for_publish(10)

        infer = MqttInferClient(client, topics, DEVICE)
        for bad in (b"garbage", b"[]", json.dumps({"transaction": "t1", "inputs": [[1, 2]]}).encode()):
            client.publish(topics.request(DEVICE, "infer"), bad, qos=1).wait_for_publish(10)
        with pytest.raises(InferenceFailed, match="input shape"):
            infer.infer(np.zeros((3, 3), np.float32))
        for body in (b"\x00\xff", b"{}", json.dumps({"inputs": "x"}).encode()):
            status, answer = http_infer(agent.http_port, body, "application/json")
            assert status == 400 and answer["error"]
        status, answer = http_infer(agent.http_port, b"not npy", "application/x-npy")
        assert status == 400 and "npy" in answer["error"]
    finally:
        close(client)
    still_serves(agent, tiny, v1)
    assert agent.proc is not None and agent.proc.poll() is None


def _wait_failed(watcher: Watcher, topics: Topics, bundle_id: str) -> dict:
    return watcher.wait_for(
        topics.reported(DEVICE),
        lambda r: (r.get("install") or {}).get("bundle_id") == bundle_id
        and r["install"]["state"] == "failed", 60)


def _refused_at_self_test(bad: Path, broker, keys, tiny, running, words: str) -> None:
    """Publish BAD; it must fail its self-test with WORDS in the reason while v1 keeps serving."""
    topics, watcher, agent, v1 = running
    pub = publish_cli(bad, broker.address, topics.prefix, keys.private, "--device", DEVICE)
    reported = _wait_failed(watcher, topics, pub["bundle_id"])
    assert reported["install"]["stage"] == "self-test"
    assert words in reported["install"]["reason"]
    assert reported["active"]["bundle_id"] == v1
    still_serves(agent, tiny, v1)


def test_signed_model_that_will_not_load_fails_self_test(tmp_path, broker, keys, tiny, running):
    bad = signed_variant(tiny.bundle, tmp_path / "v4.efb", keys, "4",
                          **{"model.tflite": b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64})
    _refused_at_self_test(bad, broker, keys, tiny, running, "could not load the model")


def test_model_that_disagrees_with_its_golden_set_is_not_activated(tmp_path, broker, keys, tiny, running):
    import io

    golden = np.load(io.BytesIO(open_bundle(tiny.bundle.read_bytes(),
                                            TrustStore.from_folder(keys.trust_dir)).files["golden.npz"]))
    buf = io.BytesIO()
    # the reference says every sample is the next class: a model that really answers must fail
    arrays = {name: golden[name] for name in golden.files}
    arrays["reference:output_0"] = np.roll(arrays["reference:output_0"], 1, axis=1)
    np.savez(buf, **arrays)
    bad = signed_variant(tiny.bundle, tmp_path / "v5.efb", keys, "5", **{"golden.npz": buf.getvalue()})
    _refused_at_self_test(bad, broker, keys, tiny, running, "top-1 agreement")


def test_desired_bundle_missing_from_broker_fails_after_the_manifest_timeout(broker, keys, tiny, running):
    topics, watcher, agent, v1 = running
    client = connect(broker.address, "test")
    try:
        client.publish(topics.device_desired(DEVICE), desired(keys.key, DEVICE, GHOST), qos=1,
                       retain=True).wait_for_publish(10)
    finally:
        close(client)
    reported = watcher.wait_for(
        topics.reported(DEVICE),
        lambda r: (r.get("install") or {}).get("bundle_id") == "ghost-1-000000000000"
        and r["install"]["state"] == "failed", 30)
    assert reported["install"]["stage"] == "manifest"
    assert "no manifest for ghost-1-000000000000 on the broker" in reported["install"]["reason"]
    still_serves(agent, tiny, v1)
