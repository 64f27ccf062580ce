"""Payloads a hostile or broken client can send (issue 10, item 11): each refused at its
own stage with a reason, never a traceback from deep inside the parser."""

from __future__ import annotations

import json

import pytest

from edgefleet.protocol import messages
from edgefleet.protocol.delivery import DeliveryError, build_transfer_manifest, parse_transfer_manifest
from edgefleet.protocol.signing import TrustStore, canonical_json


def _signed(keys, **changes):
    """A transfer manifest for 5,000 bytes, with CHANGES to its body, signed again."""
    payload, _ = build_transfer_manifest(b"x" * 5000, "m", "1", keys.key, chunk_size=1024)
    body = {**payload["body"], **changes}
    return {"body": body, "signature": keys.key.sign(canonical_json(body))}, body["bundle_id"]


def test_a_manifest_nested_100000_deep_is_refused_as_json(keys):
    payload = b'{"body": ' + b"[" * 100_000 + b"]" * 100_000 + b', "signature": {}}'
    with pytest.raises(DeliveryError, match="not valid JSON"):
        parse_transfer_manifest(payload, TrustStore.from_folder(keys.trust_dir), "x")


@pytest.mark.parametrize("changes, reason", [
    ({"bundle_size": float("inf")}, "not valid JSON"),  # written as Infinity: not JSON
    ({"bundle_size": "5000"}, "bundle_size must be an integer"),
    ({"bundle_size": True}, "bundle_size must be an integer"),
    ({"bundle_size": 5000.0}, "bundle_size must be an integer"),
    ({"chunk_size": 2**40}, "chunk size"),
    ({"chunk_size": 10**30}, "signature"),  # beyond 64 bits: read back as another number
    ({"name": 7}, "name must be a string"),
    ({"chunks": "abc"}, "chunks must be a list of SHA-256 hex digests"),
    ({"chunks": [1, 2, 3, 4, 5]}, "chunks must be a list of SHA-256 hex digests"),
])
def test_a_validly_signed_manifest_with_wrong_types_is_refused_with_the_field(keys, changes, reason):
    payload, bundle_id = _signed(keys, **changes)
    with pytest.raises(DeliveryError, match=reason):
        parse_transfer_manifest(json.dumps(payload).encode(), TrustStore.from_folder(keys.trust_dir),
                                bundle_id)


@pytest.mark.parametrize("transaction", [7, 0, "t-1", 2**40])
def test_the_transaction_comes_back_as_it_was_sent(transaction):
    request = messages.dumps({"transaction": transaction, "inputs": [[0.0]]})
    tx, _, _ = messages.parse_request(request)
    assert tx == transaction and type(tx) is type(transaction)
    assert json.loads(messages.response_payload(tx, {"x": 1}))["transaction"] == transaction


@pytest.mark.parametrize("transaction", [True, 1.5, [1], {"a": 1}, "x" * 257])
def test_a_transaction_that_is_not_a_string_or_integer_is_refused(transaction):
    with pytest.raises(messages.MessageError, match="transaction"):
        messages.parse_request(messages.dumps({"transaction": transaction, "inputs": [[0.0]]}))


def test_a_huge_npy_shape_is_answered_with_the_transaction():
    import base64
    import io

    import numpy as np

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (10**6, 10**6, 10**6)})
    npy = base64.b64encode(header.getvalue() + bytes(64)).decode()
    with pytest.raises(messages.MessageError, match=r"not a readable \.npy") as caught:
        messages.parse_request(messages.dumps({"transaction": 42, "inputs_npy": npy}))
    assert caught.value.transaction == 42


def test_a_number_beyond_float32_is_taken_without_a_warning_for_the_input_check_to_refuse():
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy's overflow warning used to reach the agent's log
        _, inputs, _ = messages.parse_request(b'{"inputs": [[1e300, 2.0]]}')
    assert np.isinf(inputs[0, 0]) and inputs[0, 1] == 2.0  # refused by name where it meets the model
