"""Delivery over MQTT: the signed transfer manifest and the chunks of one bundle.

The publisher puts both on retained topics, so the broker is the store; a device
fetches only the chunks it lacks and checks each against the manifest.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from edgefleet.protocol.limits import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from edgefleet.protocol.signing import SignatureError, Signer, TrustStore, canonical_json

FORMAT = "edgefleet.transfer/1"
_HEX64 = re.compile(r"[0-9a-f]{64}")


class DeliveryError(Exception):
    """A transfer manifest or chunk cannot be used; the message says why."""


@dataclass(frozen=True)
class TransferManifest:
    bundle_id: str
    bundle_sha256: str
    bundle_size: int
    chunk_size: int
    chunk_sha256: tuple[str, ...]
    name: str
    version: str
    signed_by: str = ""
    # what the bundle was converted for ({"profile", "delegate"}), so that a device can refuse
    # a bundle for an accelerator it lacks before downloading it; {} from older publishers
    target: dict[str, str] = field(default_factory=dict)
    # what it needs of the device (edgefleet.compat), checked before downloading; {} from older publishers
    requires: dict[str, Any] = field(default_factory=dict)

    @property
    def chunk_count(self) -> int:
        return len(self.chunk_sha256)

    def chunk_ok(self, index: int, data: bytes) -> bool:
        return 0 <= index < self.chunk_count and hashlib.sha256(data).hexdigest() == self.chunk_sha256[index]

    def expected_chunk_size(self, index: int) -> int:
        if index < self.chunk_count - 1:
            return self.chunk_size
        return self.bundle_size - self.chunk_size * (self.chunk_count - 1)


def bundle_id_for(name: str, version: str, bundle_sha256: str) -> str:
    """Readable and content-addressed: the same bytes always get the same id."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{name}-{version}").strip("-.")[:100] or "bundle"
    return f"{slug}-{bundle_sha256[:12]}"


def split_chunks(data: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[bytes]:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise DeliveryError(
            f"chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} bytes"
        )
    return [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]


def build_transfer_manifest(
    data: bytes, name: str, version: str, key: Signer, chunk_size: int = DEFAULT_CHUNK_SIZE,
    target: dict[str, str] | None = None, requires: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[bytes]]:
    """The signed manifest payload and the chunks, ready to publish."""
    chunks = split_chunks(data, chunk_size)
    digests = [hashlib.sha256(c).hexdigest() for c in chunks]
    return sign_transfer_manifest(hashlib.sha256(data).hexdigest(), len(data), chunk_size, digests, name,
                                  version, key, target, requires), chunks


def sign_transfer_manifest(
    bundle_sha256: str, bundle_size: int, chunk_size: int, chunk_sha256: list[str], name: str, version: str,
    key: Signer, target: dict[str, str] | None = None, requires: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The signed manifest payload of a bundle hashed already (the publisher hashes its chunks
    while they go out)."""
    body = {
        "format": FORMAT,
        "bundle_id": bundle_id_for(name, version, bundle_sha256),
        "bundle_sha256": bundle_sha256,
        "bundle_size": bundle_size,
        "chunk_size": chunk_size,
        "chunks": list(chunk_sha256),
        "name": name,
        "version": version,
        "published_at": time.time(),
        **({"target": dict(target)} if target else {}),
        **({"requires": dict(requires)} if requires else {}),
    }
    return {"body": body, "signature": key.sign(canonical_json(body))}


def _field(body: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = body.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):  # bool is an int to Python
        raise DeliveryError(f"transfer manifest: {key} must be {what}, not {type(value).__name__}")
    return value


def _digests(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(h, str) and _HEX64.fullmatch(h) for h in value):
        raise DeliveryError("transfer manifest: chunks must be a list of SHA-256 hex digests")
    return tuple(value)


def parse_transfer_manifest(payload: bytes, trust: TrustStore, expect_id: str) -> TransferManifest:
    """Check the signature and shape of a manifest payload; raise DeliveryError with the reason."""
    try:
        doc = orjson.loads(payload)  # UTF-8, nested at most 1,024 deep, no NaN or Infinity
    except orjson.JSONDecodeError as exc:
        raise DeliveryError(f"transfer manifest is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "body" not in doc or "signature" not in doc:
        raise DeliveryError("transfer manifest is not JSON with 'body' and 'signature'")
    body, signature = doc["body"], doc["signature"]
    if not isinstance(body, dict):
        raise DeliveryError("transfer manifest body is not an object")
    try:
        signed_by = trust.verify(canonical_json(body), signature)
    except SignatureError as exc:
        raise DeliveryError(f"transfer manifest signature rejected: {exc}") from None
    if body.get("format") != FORMAT:
        raise DeliveryError(f"transfer format {body.get('format')!r} is not {FORMAT!r}")
    target = body.get("target", {})
    target = {str(k): v for k, v in target.items() if isinstance(v, str)} if isinstance(target, dict) else {}
    requires = body.get("requires", {})
    if not isinstance(requires, dict):
        raise DeliveryError(f"transfer manifest: requires must be an object, not {type(requires).__name__}")
    m = TransferManifest(
        bundle_id=_field(body, "bundle_id", str, "a string"),
        bundle_sha256=_field(body, "bundle_sha256", str, "a string"),
        bundle_size=_field(body, "bundle_size", int, "an integer"),
        chunk_size=_field(body, "chunk_size", int, "an integer"),
        chunk_sha256=_digests(body.get("chunks")),
        name=_field(body, "name", str, "a string"),
        version=_field(body, "version", str, "a string"),
        signed_by=signed_by,
        target=target,
        requires=requires,
    )
    if m.bundle_id != expect_id:
        raise DeliveryError(f"manifest is for {m.bundle_id!r}, expected {expect_id!r}")
    expected_count = max(1, -(-m.bundle_size // m.chunk_size)) if m.chunk_size > 0 else -1
    if not MIN_CHUNK_SIZE <= m.chunk_size <= MAX_CHUNK_SIZE or m.chunk_count != expected_count:
        raise DeliveryError("transfer manifest chunk size and chunk count do not fit the bundle size")
    return m
