"""No downgrade, no replay (issue 10, item 2), against a real agent and Mosquitto: a client
that may write to the broker but holds no signing key cannot take a device back to an
older bundle or point it at a foreign one, and the operator goes back only on purpose."""

from __future__ import annotations

import hashlib
import time

import pytest

from edgefleet.agent.ordering import Ordering
from edgefleet.agent.store import Store
from edgefleet.fleet.connection import close, connect
from edgefleet.protocol.desired import BundleRef, desired_payload, parse_desired
from edgefleet.protocol.messages import MessageError
from edgefleet.protocol.signing import TrustStore
from edgefleet.protocol.topics import Topics
from tests.support import (
    AgentProcess,
    Watcher,
    desired,
    http_infer,
    is_active,
    npy_bytes,
    publish_cli,
    signed_variant,
)

DEVICE = "pi-order"


def _refused(watcher: Watcher, topics: Topics, words: str, since: float = 0.0):
    """Wait for the reported state whose last error, at the desired stage and after SINCE,
    says WORDS."""
    return watcher.wait_for(topics.reported(DEVICE), lambda r: (r.get("last_error") or {}).get("stage")
                            == "desired" and words in r["last_error"]["reason"]
                            and r["last_error"]["at"] > since, 30)


def _serves(agent: AgentProcess, tiny, bundle_id: str) -> None:
    status, answer = http_infer(agent.http_port, npy_bytes(tiny.x[:5]))
    assert status == 200 and answer["bundle_id"] == bundle_id


@pytest.mark.slow
def test_downgrades_are_refused_rollbacks_are_explicit_and_replays_stay_refused(
        tmp_path, broker, prefix, keys, tiny):
    topics = Topics(prefix)
    v2 = signed_variant(tiny.bundle, tmp_path / "v2.efb", keys, "2")
    v3 = signed_variant(tiny.bundle, tmp_path / "v3.efb", keys, "3")
    watcher = Watcher(broker.address, [topics.reported(DEVICE), topics.device_desired(DEVICE)])
    agent = AgentProcess(tmp_path, DEVICE, broker.address, prefix, keys.trust_dir).start()
    client = connect(broker.address, "no-key")  # write access to the broker, no signing key

    def put(payload: bytes) -> None:
        client.publish(topics.device_desired(DEVICE), payload, qos=1, retain=True).wait_for_publish(10)

    try:
        b2 = publish_cli(v2, broker.address, prefix, keys.private, "--device", DEVICE)["bundle_id"]
        watcher.wait_for(topics.reported(DEVICE), is_active(b2), 60)
        captured = watcher.latest[topics.device_desired(DEVICE)]  # v2's signed desired state

        # an older version, validly signed, without --rollback: refused before a chunk is fetched
        b1 = publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--device", DEVICE)["bundle_id"]
        failed = watcher.wait_for(topics.reported(DEVICE), lambda r: (r.get("install") or {}).get(
            "bundle_id") == b1 and r["install"]["state"] == "failed", 30)
        assert failed["install"]["stage"] == "desired"
        assert "tiny-digits 1 is older than 2" in failed["install"]["reason"]
        assert "--rollback" in failed["install"]["reason"]
        assert not (agent.state_dir / "downloads" / b1).exists()
        assert failed["active"]["bundle_id"] == b2
        _serves(agent, tiny, b2)

        # the operator asks for it: it goes back
        publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--device", DEVICE, "--rollback")
        watcher.wait_for(topics.reported(DEVICE), is_active(b1), 60)

        b3 = publish_cli(v3, broker.address, prefix, keys.private, "--device", DEVICE)["bundle_id"]
        watcher.wait_for(topics.reported(DEVICE), is_active(b3), 60)

        # v2's own signed desired state, put back by the client without the key: a replay
        put(captured)
        _refused(watcher, topics, "refused as a replay")
        _serves(agent, tiny, b3)

        # after a restart the put-back message is the retained one: still refused, v3 serves
        assert agent.stop() == 0
        restarted = time.time()
        agent.start()
        again = _refused(watcher, topics, "refused as a replay", since=restarted)
        assert again["active"]["bundle_id"] == b3
        _serves(agent, tiny, b3)

        # another device's signed desired state copied onto this one's topic
        put(desired(keys.key, "pi-other", BundleRef("tiny-digits", "2", _sha(v2))))
        _refused(watcher, topics, "not for device 'pi-order'", since=restarted)
        # an unsigned desired state of the older format
        put(b'{"schema": "edgefleet.desired/1", "bundle_id": "%s", "set_at": 9e9}' % b2.encode())
        _refused(watcher, topics, "unsigned", since=restarted)
        _serves(agent, tiny, b3)
    finally:
        put(b"")
        close(client)
        watcher.close()
        code = agent.stop()
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ordering(tmp_path, keys) -> tuple[Store, Ordering]:
    store = Store(tmp_path)
    return store, Ordering(store, lambda: TrustStore.from_folder(keys.trust_dir), "pi", lambda: None)


V1, V2 = BundleRef("m", "1", "1" * 64), BundleRef("m", "2", "2" * 64)


def test_each_source_keeps_its_newest_desired_state_across_restarts(tmp_path, keys):
    _, ordering = _ordering(tmp_path, keys)
    ordering.accept("device", desired_payload(keys.key, "device", "pi", V2, set_at=10.0))
    ordering.accept("group:g", desired_payload(keys.key, "group", "g", V1, set_at=3.0))  # its own order
    ordering.accept("device", b"")  # cleared: the order stays
    _, restarted = _ordering(tmp_path, keys)
    with pytest.raises(MessageError, match="replay"):
        restarted.accept("device", desired_payload(keys.key, "device", "pi", V1, set_at=9.0))
    again = restarted.accept("device", desired_payload(keys.key, "device", "pi", V2, set_at=10.0))
    assert again.bundle == V2  # the same one, delivered again on reconnect: not a replay
    assert restarted.accept("group:g", desired_payload(keys.key, "group", "g", V2, set_at=4.0)).bundle == V2


def test_an_old_rollback_cannot_undo_a_later_upgrade(tmp_path, keys):
    store, ordering = _ordering(tmp_path, keys)
    store.set_active(V2.bundle_id, set_at=10.0)  # v2 was installed by a desired state set at 10
    active = store.active_record()

    def refusal(bundle: BundleRef, set_at: float, rollback: bool) -> str | None:
        # a group the device has heard nothing from yet, so only the version rule applies
        payload = desired_payload(keys.key, "group", "g", bundle, rollback=rollback, set_at=set_at)
        wanted = parse_desired(payload, TrustStore.from_folder(keys.trust_dir), "group", "g")
        return ordering.refusal(wanted, ("m", "2"), active)

    assert "a downgrade, refused" in refusal(V1, 11.0, rollback=False)
    assert "an old rollback put back" in refusal(V1, 9.0, rollback=True)
    assert refusal(V1, 12.0, rollback=True) is None
    assert refusal(V2, 13.0, rollback=False) is None
    assert ordering.refusal(ordering.accept("device", b""), ("m", "2"), active) is None
    assert ordering.refusal(ordering.accept("device", desired_payload(keys.key, "device", "pi", V1)),
                            None, {}) is None  # nothing runs yet: nothing to go back from
