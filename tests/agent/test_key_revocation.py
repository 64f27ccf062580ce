"""Keys on a real agent and Mosquitto (issue 10, item 3): a key revoked after its bundle was
installed is reported (and, by [trust] on_revoked, stops serving), new content it signed is
refused, and unsigned bundles install only under the development setting, flagged."""

from __future__ import annotations

import shutil

import pytest

from edgefleet.fleet.connection import close, connect
from edgefleet.fleet.publish import publish_bundle
from edgefleet.protocol.signing import UNSIGNED, SigningKey, generate_keypair, revoke_key, trust_key
from edgefleet.protocol.topics import Topics
from tests.support import AgentProcess, Watcher, http_infer, is_active, npy_bytes, signed_variant

pytestmark = pytest.mark.slow
DEVICE = "pi-keys"


@pytest.fixture()
def second_key(tmp_path, keys):
    """Key b beside the test key, both trusted in a trust folder of the agent's own."""
    trust = tmp_path / "trust"
    shutil.copytree(keys.trust_dir, trust)
    private, public = generate_keypair(tmp_path / "b", "b")
    trust_key(public, trust)
    return trust, SigningKey.load(private)


def _publish(broker, topics, bundle, key) -> str:
    client = connect(broker.address, "test")
    try:
        return publish_bundle(client, topics, bundle, key, devices=[DEVICE]).bundle_id
    finally:
        close(client)


def _trust_error(watcher, topics, words: str) -> dict:
    return watcher.wait_for(topics.reported(DEVICE), lambda r: (r.get("last_error") or {}).get("stage")
                            == "trust" and words in r["last_error"]["reason"], 30)


def test_a_revoked_key_s_active_bundle_is_reported_and_keeps_serving(tmp_path, broker, prefix, keys, tiny,
                                                                     second_key):
    trust, key_b = second_key
    topics = Topics(prefix)
    v2 = signed_variant(tiny.bundle, tmp_path / "v2.efb", keys, "2", signer=key_b)
    watcher = Watcher(broker.address, [topics.reported(DEVICE), topics.telemetry(DEVICE)])
    agent = AgentProcess(tmp_path, DEVICE, broker.address, prefix, trust).start()
    try:
        b2 = _publish(broker, topics, v2, keys.key)  # the bundle signed by b, its transfer by the test key
        active = watcher.wait_for(topics.reported(DEVICE), is_active(b2), 60)["active"]
        assert (active["signed_by"], active["revoked"]) == (key_b.key_id, None)
        revoke_key(trust, key_b.key_id, "laptop lost")
        reported = _trust_error(watcher, topics, f"key {key_b.key_id}, which is revoked (laptop lost)")
        assert reported["active"]["bundle_id"] == b2 and reported["active"]["revoked"] == "laptop lost"
        watcher.wait_for(topics.telemetry(DEVICE), lambda t: (t.get("model") or {}).get("revoked")
                         == "laptop lost", 30)
        status, answer = http_infer(agent.http_port, npy_bytes(tiny.x[:3]))
        assert status == 200 and answer["bundle_id"] == b2  # on_revoked = "report": it still serves
        # what b signs now is refused, with the key and the reason: here its desired state
        _publish(broker, topics, signed_variant(tiny.bundle, tmp_path / "v3.efb", keys, "3"), key_b)
        words = f"key {key_b.key_id}, which is revoked"
        refused = watcher.wait_for(topics.reported(DEVICE), lambda r: (r.get("last_error") or {}).get(
            "stage") == "desired" and words in r["last_error"]["reason"], 30)
        assert refused["active"]["bundle_id"] == b2
    finally:
        code = agent.stop()
        watcher.close()
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()


def test_on_revoked_deactivate_falls_back_to_the_previous_bundle_and_stays_there(
        tmp_path, broker, prefix, keys, tiny, second_key):
    trust, key_b = second_key
    topics = Topics(prefix)
    watcher = Watcher(broker.address, [topics.reported(DEVICE)])
    agent = AgentProcess(tmp_path, DEVICE, broker.address, prefix, trust,
                         extra_toml='[trust]\non_revoked = "deactivate"\n').start()
    try:
        b1 = _publish(broker, topics, tiny.bundle, keys.key)
        watcher.wait_for(topics.reported(DEVICE), is_active(b1), 60)
        b2 = _publish(broker, topics, signed_variant(tiny.bundle, tmp_path / "v2.efb", keys, "2",
                                                     signer=key_b), keys.key)
        watcher.wait_for(topics.reported(DEVICE), is_active(b2), 60)
        revoke_key(trust, key_b.key_id, "rotated")
        reported = _trust_error(watcher, topics, f"deactivated ([trust] on_revoked): now serving {b1}")
        assert reported["active"]["bundle_id"] == b1
        status, answer = http_infer(agent.http_port, npy_bytes(tiny.x[:3]))
        assert status == 200 and answer["bundle_id"] == b1
        assert agent.stop() == 0
        agent.start()  # after a restart the revoked bundle is neither served nor installed again
        failed = watcher.wait_for(topics.reported(DEVICE), lambda r: (r.get("install") or {}).get(
            "bundle_id") == b2 and r["install"]["state"] == "failed", 30)
        assert failed["install"]["stage"] == "verify" and "revoked (rotated)" in failed["install"]["reason"]
        assert failed["active"]["bundle_id"] == b1
        # with nothing to fall back to, nothing serves
        revoke_key(trust, keys.key.key_id, "rotated too")
        _trust_error(watcher, topics, "no model serves now")
        status, answer = http_infer(agent.http_port, npy_bytes(tiny.x[:3]))
        assert status == 503 and "no model" in answer["error"], answer
    finally:
        code = agent.stop()
        watcher.close()
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()


@pytest.mark.parametrize("allowed", [False, True])
def test_unsigned_bundles_install_only_under_the_development_setting_which_every_message_flags(
        tmp_path, broker, prefix, keys, tiny, allowed):
    topics = Topics(prefix)
    unsigned = signed_variant(tiny.bundle, tmp_path / "u.efb", keys, "1", signer=UNSIGNED)
    watcher = Watcher(broker.address, [topics.reported(DEVICE), topics.telemetry(DEVICE)])
    toml = "[trust]\nallow_unsigned = true\n" if allowed else ""
    agent = AgentProcess(tmp_path, DEVICE, broker.address, prefix, keys.trust_dir, extra_toml=toml).start()
    try:
        bundle_id = _publish(broker, topics, unsigned, UNSIGNED)
        if allowed:
            active = watcher.wait_for(topics.reported(DEVICE), is_active(bundle_id), 60)
            assert active["active"]["signed_by"] == "unsigned" and active["agent"]["allow_unsigned"] is True
            assert active["desired"]["signed_by"] == "unsigned"
            t = watcher.wait_for(topics.telemetry(DEVICE), lambda t: t.get("model") is not None, 30)
            assert t["trust"] == {"allow_unsigned": True}
        else:
            refused = watcher.wait_for(topics.reported(DEVICE), lambda r: (r.get("last_error") or {}).get(
                "stage") == "desired" and "unsigned" in r["last_error"]["reason"], 30)
            assert "allow_unsigned = true" in refused["last_error"]["reason"]
            assert refused["active"] is None and refused["agent"]["allow_unsigned"] is False
            t = watcher.wait_for(topics.telemetry(DEVICE), lambda t: "trust" in t, 30)
            assert t["trust"] == {"allow_unsigned": False}
    finally:
        code = agent.stop()
        watcher.close()
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()
