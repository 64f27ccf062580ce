"""Transfer manifests, chunking and inbound message parsing."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edgefleet.protocol import messages
from edgefleet.protocol.delivery import (
    DeliveryError,
    build_transfer_manifest,
    parse_transfer_manifest,
    split_chunks,
)
from edgefleet.protocol.signing import SigningKey, TrustStore, generate_keypair
from edgefleet.protocol.topics import Topics, check_id


def test_chunks_reassemble_and_hashes_match(keys):
    key, trust_dir = keys.key, keys.trust_dir
    data = os.urandom(200_000)
    payload, chunks = build_transfer_manifest(data, "m", "1", key, chunk_size=65536)
    assert [len(c) for c in chunks] == [65536, 65536, 65536, 200_000 - 3 * 65536]
    m = parse_transfer_manifest(json.dumps(payload).encode(), TrustStore.from_folder(trust_dir),
                                payload["body"]["bundle_id"])
    assert b"".join(chunks) == data
    assert all(m.chunk_ok(i, c) for i, c in enumerate(chunks))
    assert not m.chunk_ok(1, chunks[0]) and not m.chunk_ok(9, chunks[0])
    assert m.bundle_id.startswith("m-1-")


def test_tampered_manifest_is_refused(keys):
    key, trust_dir = keys.key, keys.trust_dir
    payload, _ = build_transfer_manifest(b"x" * 5000, "m", "1", key, chunk_size=1024)
    payload["body"]["bundle_size"] = 4000
    with pytest.raises(DeliveryError, match="signature"):
        parse_transfer_manifest(json.dumps(payload).encode(), TrustStore.from_folder(trust_dir),
                                payload["body"]["bundle_id"])


def test_manifest_for_another_bundle_is_refused(keys):
    key, trust_dir = keys.key, keys.trust_dir
    payload, _ = build_transfer_manifest(b"x" * 5000, "m", "1", key, chunk_size=1024)
    with pytest.raises(DeliveryError, match="expected"):
        parse_transfer_manifest(json.dumps(payload).encode(), TrustStore.from_folder(trust_dir), "other")


def test_manifest_signed_by_stranger_is_refused(tmp_path, keys):
    private, _ = generate_keypair(tmp_path)
    payload, _ = build_transfer_manifest(b"x" * 5000, "m", "1", SigningKey.load(private), 1024)
    with pytest.raises(DeliveryError, match="not in the trust store"):
        parse_transfer_manifest(json.dumps(payload).encode(), TrustStore.from_folder(keys.trust_dir),
                                payload["body"]["bundle_id"])


@pytest.mark.parametrize("payload", [b"", b"{", b"[]", b'{"body": 1, "signature": {}}'])
def test_garbage_manifest_payloads_are_refused(keys, payload):
    with pytest.raises(DeliveryError):
        parse_transfer_manifest(payload, TrustStore.from_folder(keys.trust_dir), "x")


def test_chunk_size_limits():
    with pytest.raises(DeliveryError, match="outside"):
        split_chunks(b"abc", 10)
    with pytest.raises(DeliveryError, match="outside"):
        split_chunks(b"abc", 10 * 1024 * 1024)


@pytest.mark.parametrize("payload", [b"x", b"{}", b'{"inputs": [[1, 2], [3]]}',
                                     b'{"inputs_npy": "!!!"}', b'{"inputs_npy": "aGVsbG8="}',
                                     b'{"inputs": [1], "transaction": {"a": 1}}'])
def test_malformed_inference_requests_raise_message_error(payload):
    with pytest.raises(messages.MessageError):
        messages.parse_request(payload)


def test_inference_request_with_npy_keeps_shape_and_transaction():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    request = messages.dumps({"transaction": 7, "inputs_npy": messages.encode_array(x)})
    tx, got, _ = messages.parse_request(request)
    assert tx == 7 and np.array_equal(got, x)  # an integer transaction stays an integer


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "a b", "-a", "x" * 200])
def test_ids_that_would_break_topics_are_refused(bad):
    with pytest.raises(ValueError):
        check_id("device", bad)


def test_topic_layout():
    t = Topics("fleet")
    assert t.bundle_chunk("b", 3) == "fleet/bundles/b/chunks/3"
    assert t.request("d", "infer") == "fleet/devices/d/request/infer"
    assert t.device_of("fleet/devices/d1/telemetry") == "d1"
    assert t.device_of("other/devices/d1/telemetry") is None
    with pytest.raises(ValueError):
        Topics("a/#")


@pytest.mark.parametrize("sig", [123, None, ["x"], "!!!"])
def test_malformed_signature_values_are_signature_errors(keys, sig):
    from edgefleet.protocol.signing import SignatureError

    key, trust_dir = keys.key, keys.trust_dir
    with pytest.raises(SignatureError):
        TrustStore.from_folder(trust_dir).verify(b"data", {"alg": "ed25519", "key_id": key.key_id,
                                                           "sig": sig})


def test_bad_inference_request_keeps_its_transaction_for_the_answer():
    with pytest.raises(messages.MessageError) as exc:
        messages.parse_request(b'{"transaction": "t9", "inputs_npy": "!!!"}')
    assert exc.value.transaction == "t9"


def test_deeply_nested_json_is_a_message_error():
    with pytest.raises(messages.MessageError, match="not valid JSON"):
        messages.parse_request(b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


@pytest.mark.parametrize("array", [
    np.zeros((1, 8, 8, 1), np.float32), np.arange(6, dtype=">i4").reshape(2, 3),
    np.asfortranarray(np.arange(6.0).reshape(2, 3)), np.zeros((0, 3), np.uint8), np.float32(3.5),
])
def test_npy_bodies_read_as_numpy_writes_them(array):
    import io

    for version in ((1, 0), (2, 0)):
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.asanyarray(array), version=version)
        for _ in range(2):  # the second time from the header cache
            got = messages.decode_npy(buf.getvalue())
            assert got.shape == np.shape(array) and got.dtype == np.asarray(array).dtype
            np.testing.assert_array_equal(got, array)


def test_broken_npy_bodies_are_refused_with_the_reason():
    import io

    buf = io.BytesIO()
    np.save(buf, np.zeros(4))
    good = buf.getvalue()
    huge = io.BytesIO()  # a header that claims 10**20 numbers, followed by four
    np.lib.format.write_array_header_1_0(huge, {"descr": "<f8", "fortran_order": False,
                                                "shape": (10**10, 10**10)})
    cases = {good[:-8]: "smaller than requested", good[:20]: "reading array header",
             huge.getvalue() + bytes(32): "not a readable"}
    objects = io.BytesIO()
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases[objects.getvalue()] = "Python objects are refused"
    for body, reason in cases.items():
        with pytest.raises(messages.MessageError, match=reason):
            messages.decode_npy(body)
