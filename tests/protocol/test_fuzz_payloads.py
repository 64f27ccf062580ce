"""Fuzzing every inbound payload the agent parses (issue 10, the fault suite): 2,000 generated
payloads per kind, random bytes, random JSON and bodies signed with a trusted key (what a
mistaken publisher sends), each either parsed or refused with the parser's own error, never
another exception."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.agent.replies import Replies
from edgefleet.protocol import messages
from edgefleet.protocol.delivery import DeliveryError, parse_transfer_manifest
from edgefleet.protocol.desired import parse_desired
from edgefleet.protocol.signing import TrustStore, canonical_json

EXAMPLES = settings(max_examples=2000, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
           | st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=25)
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)


def _obj(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with some of KEYS (each a plausible or a random value) and random others."""
    extra = st.dictionaries(st.text(max_size=8), json_values, max_size=2)
    return st.tuples(st.fixed_dictionaries({}, optional={k: v | json_values for k, v in keys.items()}),
                     extra).map(lambda pair: {**pair[1], **pair[0]})


desired_bodies = _obj({
    "schema": st.just("edgefleet.desired/2"), "for": st.just({"device": "pi-1"}),
    "bundle": st.just("previous") | _obj({"id": st.text(max_size=30), "name": st.text(max_size=10),
                                          "version": st.sampled_from(["1", "2.0", "x"]), "sha256": hex64}),
    "set_at": st.floats(allow_nan=True, allow_infinity=True) | st.integers(), "rollback": st.booleans(),
})
manifest_bodies = _obj({
    "format": st.just("edgefleet.transfer/1"), "bundle_id": st.just("m-1-abc"), "bundle_sha256": hex64,
    "bundle_size": st.integers(-10, 10**12), "chunk_size": st.integers(-10, 2**20),
    "chunks": st.lists(hex64, max_size=4), "name": st.text(max_size=10), "version": st.text(max_size=5),
    "target": json_values, "requires": json_values,
})
requests = _obj({
    "transaction": st.text(max_size=300) | st.integers(), "reply_to": st.text(max_size=40),
    "inputs": st.lists(st.lists(st.floats(), max_size=4), max_size=3), "inputs_npy": st.text(max_size=40),
    "inputs_npz": st.text(max_size=40),
})


@pytest.fixture(scope="module")
def trust(keys) -> TrustStore:
    return TrustStore.from_folder(keys.trust_dir)


def _signed(keys, body: Any) -> bytes:
    try:
        signature = keys.key.sign(canonical_json(body))
    except (TypeError, ValueError):  # a body canonical JSON cannot write: sent as it is
        signature = {}
    return json.dumps({"body": body, "signature": signature}, allow_nan=True).encode()


@EXAMPLES
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()) | desired_bodies.map(
    lambda b: json.dumps({"body": b, "signature": {}}).encode()))
def test_desired_states_from_anyone(trust, payload):
    with contextlib.suppress(messages.MessageError):
        parse_desired(payload, trust, "device", "pi-1")


@EXAMPLES
@given(desired_bodies)
def test_desired_states_signed_by_a_trusted_key(keys, trust, body):
    with contextlib.suppress(messages.MessageError):
        parse_desired(_signed(keys, body), trust, "device", "pi-1")


@EXAMPLES
@given(manifest_bodies)
def test_transfer_manifests_signed_by_a_trusted_key(keys, trust, body):
    with contextlib.suppress(DeliveryError):
        parse_transfer_manifest(_signed(keys, body), trust, "m-1-abc")


@EXAMPLES
@given(st.binary(max_size=300) | requests.map(lambda r: json.dumps(r).encode()))
def test_inference_requests_and_their_reply_topics(payload):
    try:
        request = messages.parse_request(payload)
    except messages.MessageError:
        return
    replies = Replies("p/devices/d/response/infer", "p/devices/d/response/", lambda *a: None)
    if request.reply_to is not None:  # wherever it asked, the answer stays in the device's sub-tree
        assert all(level and level not in ("+", "#", "..") for level in request.reply_to.split("/"))
    replies.answer(b"{}", replies.route(None, None), request.reply_to)


@EXAMPLES
@given(st.text(max_size=80))
def test_mqtt5_response_topics_never_leave_the_device_s_sub_tree(topic):
    route = Replies("p/devices/d/response/infer", "p/devices/d/response/", lambda *a: None).route(topic, None)
    if route.refused is None:
        assert topic.startswith("p/devices/d/response/") and "+" not in topic and "#" not in topic


status_bodies = _obj({"state": st.sampled_from(["online", "offline", "stopped"]),
                      "ts": st.floats() | st.integers(-2**70, 2**70), "since": st.floats() | st.booleans(),
                      "instance": st.sampled_from(["aaaa", "bbbb"])})


@EXAMPLES
@given(st.binary(max_size=300) | status_bodies.map(lambda b: json.dumps(b).encode()))
def test_the_agent_s_own_status_topic(payload):
    from edgefleet.agent.link import foreign_status

    assert foreign_status(payload, "aaaa", 1000.0) in (True, False)
