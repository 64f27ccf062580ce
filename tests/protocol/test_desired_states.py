"""Signed desired states and the version rule (issue 10, item 2): what a client with write
access to the broker but no signing key can send is refused, each with its reason."""

from __future__ import annotations

import json

import pytest

from edgefleet.protocol.desired import BundleRef, check_version, desired_payload, downgrade, parse_desired
from edgefleet.protocol.messages import MessageError
from edgefleet.protocol.signing import SigningKey, TrustStore, canonical_json

REF = BundleRef("digits", "2", "ab" * 32)


@pytest.fixture()
def trust(keys) -> TrustStore:
    return TrustStore.from_folder(keys.trust_dir)


def _resigned(keys, payload: bytes, **changes) -> bytes:
    """PAYLOAD's body with CHANGES, signed again with the trusted key (a mistaken publisher)."""
    body = {**json.loads(payload)["body"], **changes}
    return json.dumps({"body": body, "signature": keys.key.sign(canonical_json(body))}).encode()


def test_round_trip_names_the_bundle_the_key_and_the_rollback(keys, trust):
    d = parse_desired(desired_payload(keys.key, "device", "pi-1", REF, rollback=True, set_at=1.5e9),
                      trust, "device", "pi-1")
    assert d.bundle == REF and d.bundle_id == "digits-2-abababababab"
    assert (d.set_at, d.rollback, d.signed_by) == (1.5e9, True, keys.key.key_id)
    cleared = parse_desired(desired_payload(keys.key, "group", "g", None), trust, "group", "g")
    assert cleared.bundle_id is None and cleared.set_at > 0
    assert parse_desired(b"", trust, "device", "pi-1").bundle_id is None  # the retained message cleared


def test_a_desired_state_for_another_device_or_a_group_is_refused(keys, trust):
    payload = desired_payload(keys.key, "device", "pi-1", REF)
    with pytest.raises(MessageError, match="not for device 'pi-2'"):
        parse_desired(payload, trust, "device", "pi-2")
    with pytest.raises(MessageError, match="not for group 'pi-1'"):
        parse_desired(payload, trust, "group", "pi-1")


def test_unsigned_forged_and_foreign_desired_states_are_refused(keys, trust, tmp_path):
    old = b'{"schema": "edgefleet.desired/1", "bundle_id": "digits-1-abababababab", "set_at": 1}'
    with pytest.raises(MessageError, match="unsigned"):
        parse_desired(old, trust, "device", "pi-1")
    payload = desired_payload(keys.key, "device", "pi-1", REF)
    doc = json.loads(payload)
    doc["body"]["bundle"]["version"] = "1"  # pointed at another bundle without the key
    with pytest.raises(MessageError, match="does not match the signed content"):
        parse_desired(json.dumps(doc).encode(), trust, "device", "pi-1")
    stranger = SigningKey.load(_keypair(tmp_path))
    with pytest.raises(MessageError, match="not in the trust store"):
        parse_desired(desired_payload(stranger, "device", "pi-1", REF), trust, "device", "pi-1")
    del doc["signature"]
    with pytest.raises(MessageError, match="'body' and 'signature'"):
        parse_desired(json.dumps(doc).encode(), trust, "device", "pi-1")


def _keypair(folder) -> str:
    from edgefleet.protocol.signing import generate_keypair

    return str(generate_keypair(folder, "stranger")[0])


@pytest.mark.parametrize("changes, reason", [
    ({"set_at": "5"}, "set_at must be a finite number"),
    ({"set_at": True}, "set_at must be a finite number"),
    # found by tests/agent/test_fuzz_running_agent.py: the replay refusal could not print them
    ({"set_at": -3.7e15}, "is not a time between 1970 and 9999"),
    ({"set_at": 1e300}, "is not a time between 1970 and 9999"),
    ({"rollback": "yes"}, "rollback must be true or false"),
    ({"schema": "edgefleet.desired/9"}, "schema"),
    ({"bundle": "digits-2-abababababab"}, "bundle must be an object"),
    ({"bundle": {"id": "digits-2-abababababab", "name": "digits", "version": "2", "sha256": "AB" * 32}},
     "lowercase SHA-256"),
    ({"bundle": {"id": "digits-2-abababababab", "name": "digits", "version": "3", "sha256": "ab" * 32}},
     "does not belong"),
    ({"bundle": {"id": "x", "name": "digits", "version": 2, "sha256": "ab" * 32}}, "bundle.version must be"),
    ({"bundle": {"id": "x", "name": "n" * 300, "version": "2", "sha256": "ab" * 32}}, "bundle.name must be"),
])
def test_a_validly_signed_desired_state_with_wrong_fields_is_refused_with_the_field(keys, trust, changes,
                                                                                     reason):
    payload = _resigned(keys, desired_payload(keys.key, "device", "pi-1", REF), **changes)
    with pytest.raises(MessageError, match=reason):
        parse_desired(payload, trust, "device", "pi-1")


@pytest.mark.parametrize("payload", [b"nope", b"[1]", b'{"body": 1, "signature": {}}',
                                     b'{"body": ' + b"[" * 100_000 + b"]" * 100_000 + b', "signature": {}}',
                                     b'{"body": {"set_at": Infinity}, "signature": {}}'])
def test_garbage_desired_states_raise_message_error(trust, payload):
    with pytest.raises(MessageError):
        parse_desired(payload, trust, "device", "pi-1")


def test_json_that_is_not_utf8_is_refused(keys, trust):
    text = desired_payload(keys.key, "device", "pi-1", BundleRef("m\u00e9", "1", "ab" * 32)).decode()
    assert parse_desired(text.encode(), trust, "device", "pi-1").bundle.name == "m\u00e9"
    for encoding in ("utf-16", "utf-32", "latin-1"):
        with pytest.raises(MessageError, match="not valid JSON"):
            parse_desired(text.encode(encoding), trust, "device", "pi-1")


@pytest.mark.parametrize("running, wanted, older", [
    ("2", "1", True), ("1.10", "1.9", True), ("2.0", "2.0rc1", True), ("v3", "2", True),
    ("1", "2", False), ("1.9", "1.10", False), ("2", "2.0", False), ("1", "1", False),
    ("2", "not-a-version!", False), ("nightly", "1", False),  # cannot be ordered: not refused for this
])
def test_versions_of_one_model_are_ordered_as_pep440(running, wanted, older):
    reason = downgrade(("digits", running), ("digits", wanted))
    assert (reason is not None) == older
    if older:
        assert f"digits {wanted} is older than {running}" in reason
    assert downgrade(("digits", running), ("other", wanted)) is None  # another model: never a downgrade


def test_bundle_versions_must_be_pep440():
    assert check_version("1.2rc1") == "1.2rc1"
    with pytest.raises(ValueError, match="not a PEP 440 version"):
        check_version("2024-06-a")


def test_a_rollback_to_the_previous_bundle_names_no_bundle_and_must_say_rollback(keys, trust):
    d = parse_desired(desired_payload(keys.key, "group", "g", "previous", rollback=True), trust, "group", "g")
    assert d.previous and d.rollback and d.bundle is None
    with pytest.raises(ValueError, match="'previous' with rollback"):
        desired_payload(keys.key, "group", "g", "previous")
    rollback = desired_payload(keys.key, "group", "g", "previous", rollback=True)
    forged = _resigned(keys, rollback, rollback=False)
    with pytest.raises(MessageError, match="rollback must be true"):
        parse_desired(forged, trust, "group", "g")
