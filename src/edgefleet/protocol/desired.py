"""Desired states: which bundle a device or a group should run, signed by the publisher,
and the version rule that keeps a device from going back (docs/protocol.md, "No
downgrade, no replay").

A desired state names its target (one device or one group), the bundle (id, name,
version, SHA-256), when it was set, and whether it is a rollback. The publisher signs it
with the key that signs the transfer manifest, so a client that may write to the broker
but holds no key can neither point a device at another bundle nor copy one device's
desired state onto another's topic.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson
from packaging.version import InvalidVersion, Version

from edgefleet.protocol.delivery import bundle_id_for
from edgefleet.protocol.messages import MessageError, dumps
from edgefleet.protocol.signing import SignatureError, Signer, TrustStore, canonical_json
from edgefleet.protocol.topics import check_id

SCHEMA = "edgefleet.desired/2"
KINDS = ("device", "group")
PREVIOUS = "previous"  # `"bundle": "previous"`: each device goes back to the bundle it ran before
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_TEXT = 256


@dataclass(frozen=True)
class BundleRef:
    """The bundle a desired state names; its id follows from the three fields."""

    name: str
    version: str
    sha256: str

    @property
    def bundle_id(self) -> str:
        return bundle_id_for(self.name, self.version, self.sha256)


@dataclass(frozen=True)
class Desired:
    """What an operator asked for. `set_at` orders desired states and tells a re-issued
    request from the old one; `bundle` is None when the desired state was cleared, and
    until the agent has worked out which bundle a PREVIOUS one means on this device."""

    bundle: BundleRef | None = None
    set_at: float = 0.0
    rollback: bool = False
    set_by: str = ""
    signed_by: str = ""
    previous: bool = False  # "go back to the bundle you ran before" (edgefleet rollback)

    @property
    def bundle_id(self) -> str | None:
        return self.bundle.bundle_id if self.bundle else None


def desired_payload(key: Signer, kind: str, target: str, bundle: BundleRef | str | None,
                    rollback: bool = False, set_by: str = "edgefleet publish",
                    set_at: float | None = None) -> bytes:
    """The signed desired state of one device or group (KIND "device" or "group"); BUNDLE
    PREVIOUS (a rollback) sends each device back to the bundle it ran before."""
    if kind not in KINDS:
        raise ValueError(f"a desired state is for a device or a group, not a {kind!r}")
    if isinstance(bundle, str) and (bundle != PREVIOUS or not rollback):
        raise ValueError(f"a desired state names a bundle, or {PREVIOUS!r} with rollback")
    named: Any = bundle
    if isinstance(bundle, BundleRef):
        named = {"id": check_id("bundle", bundle.bundle_id), "name": bundle.name,
                 "version": bundle.version, "sha256": bundle.sha256}
    body: dict[str, Any] = {
        "schema": SCHEMA, "for": {kind: check_id(kind, target)}, "bundle": named,
        "set_at": time.time() if set_at is None else set_at, "set_by": set_by, "rollback": rollback,
    }
    return dumps({"body": body, "signature": key.sign(canonical_json(body))})


def _text(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT:
        raise MessageError(f"desired state: {what} must be a string of 1-{_MAX_TEXT} characters")
    return value


def _bundle(value: Any) -> BundleRef | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MessageError("desired state: bundle must be an object or null")
    sha = _text(value, "sha256", "bundle.sha256")
    if not _HEX64.fullmatch(sha):
        raise MessageError("desired state: bundle.sha256 must be a lowercase SHA-256 hex digest")
    ref = BundleRef(_text(value, "name", "bundle.name"), _text(value, "version", "bundle.version"), sha)
    if value.get("id") != ref.bundle_id:
        raise MessageError(f"desired state: bundle.id {value.get('id')!r} does not belong to "
                           f"{ref.name} {ref.version} with that SHA-256 ({ref.bundle_id!r})")
    return ref


LATEST_SET_AT = 253402300800  # 10000-01-01T00:00:00Z


def parse_desired(payload: bytes, trust: TrustStore, kind: str, target: str) -> Desired:
    """The desired state a message on KIND TARGET's desired topic asks for; an empty payload
    (the retained message was cleared) asks for nothing. MessageError says what is wrong."""
    if not payload:
        return Desired()
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"desired state is not valid JSON: {exc}") from None
    if isinstance(doc, dict) and doc.get("schema") == "edgefleet.desired/1":
        raise MessageError("desired state is unsigned (edgefleet.desired/1, from an older edgefleet): "
                           "set it again with this version's 'edgefleet publish', which signs it")
    if not isinstance(doc, dict) or not isinstance(doc.get("body"), dict) or "signature" not in doc:
        raise MessageError("desired state is not JSON with 'body' and 'signature'")
    body = doc["body"]
    try:
        signed_by = trust.verify(canonical_json(body), doc["signature"])
    except SignatureError as exc:
        raise MessageError(f"desired state signature rejected: {exc}") from None
    if body.get("schema") != SCHEMA:
        raise MessageError(f"desired state schema {body.get('schema')!r} is not {SCHEMA!r}")
    if body.get("for") != {kind: target}:  # a copy of another device's or group's desired state
        raise MessageError(f"desired state is for {body.get('for')!r}, not for {kind} {target!r}: "
                           "refused (a desired state is signed for one device or group)")
    set_at, rollback = body.get("set_at"), body.get("rollback", False)
    if isinstance(set_at, bool) or not isinstance(set_at, (int, float)) or not math.isfinite(set_at):
        raise MessageError("desired state: set_at must be a finite number (seconds since 1970)")
    if not 0 <= set_at < LATEST_SET_AT:  # beyond it, no clock can print it (and none set it)
        raise MessageError(f"desired state: set_at {set_at!r} is not a time between 1970 and 9999 "
                           "(seconds since 1970)")
    if not isinstance(rollback, bool):
        raise MessageError("desired state: rollback must be true or false")
    set_by = body.get("set_by", "")
    previous = body.get("bundle") == PREVIOUS
    if previous and not rollback:
        raise MessageError(f"desired state: bundle {PREVIOUS!r} is a rollback: rollback must be true")
    return Desired(None if previous else _bundle(body.get("bundle")), float(set_at), rollback,
                   set_by if isinstance(set_by, str) else "", signed_by, previous)


def downgrade(running: tuple[str, str], wanted: tuple[str, str]) -> str | None:
    """Why going from RUNNING to WANTED (name, version) would be a downgrade, or None.

    Versions of the same model are compared as PEP 440 versions (1 < 1.1 < 2 < 10, 2.0rc1 <
    2.0); another model's bundle is never a downgrade. Versions that are not PEP 440 (a
    bundle not made by `edgefleet convert` or `pack`, which refuse them) cannot be ordered,
    so they are not refused for this.
    """
    (name, version), (new_name, new_version) = running, wanted
    if name != new_name:
        return None
    try:
        older = Version(new_version) < Version(version)
    except InvalidVersion:
        return None
    return f"{new_name} {new_version} is older than {version}, which this device runs" if older else None


def check_version(version: str) -> str:
    """VERSION if it is a PEP 440 version; ValueError saying so otherwise."""
    try:
        Version(version)
    except InvalidVersion:
        raise ValueError(f"version {version!r} is not a PEP 440 version (such as 1, 1.2 or 2.0rc1): "
                         "devices order versions to refuse downgrades") from None
    return version
