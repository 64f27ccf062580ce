"""Ed25519 keys, signatures and the agent's trust store (a folder of public keys)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"


class SignatureError(Exception):
    """A signature is missing, malformed, from an unknown key, or does not verify."""


def canonical_json(obj: Any) -> bytes:
    """The exact bytes that get signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    private_key: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return key_id(self.private_key.public_key())

    def sign(self, data: bytes) -> dict[str, str]:
        sig = self.private_key.sign(data)
        return {"alg": "ed25519", "key_id": self.key_id, "sig": base64.b64encode(sig).decode()}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        path = Path(path)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise SignatureError(
                f"signing key {path} not found: create one with 'edgefleet keys generate'"
            ) from None
        except ValueError as exc:
            raise SignatureError(f"{path} is not a PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError(f"{path} is not an Ed25519 key")
        return cls(key)


def generate_keypair(folder: str | os.PathLike[str], name: str = "signing") -> tuple[Path, Path]:
    """Write NAME.key (private, mode 0600) and NAME.pub into FOLDER; never overwrite."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / f"{name}{PRIVATE_SUFFIX}", folder / f"{name}{PUBLIC_SUFFIX}"
    for p in (private_path, public_path):
        if p.exists():
            raise FileExistsError(f"{p} exists; choose another --name or folder")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


class TrustStore:
    """Public keys the agent accepts signatures from: every *.pub file in one folder."""

    def __init__(self, keys: dict[str, Ed25519PublicKey]):
        self.keys = keys

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str]) -> TrustStore:
        folder = Path(folder)
        keys: dict[str, Ed25519PublicKey] = {}
        if folder.is_dir():
            for path in sorted(folder.glob(f"*{PUBLIC_SUFFIX}")):
                try:
                    key = serialization.load_pem_public_key(path.read_bytes())
                except ValueError as exc:
                    raise SignatureError(f"trusted key {path} is not a PEM public key: {exc}") from None
                if not isinstance(key, Ed25519PublicKey):
                    raise SignatureError(f"trusted key {path} is not an Ed25519 key")
                keys[key_id(key)] = key
        return cls(keys)

    def verify(self, data: bytes, signature: Any) -> str:
        """Return the key id that signed DATA, or raise SignatureError saying why not."""
        if not isinstance(signature, dict) or signature.get("alg") != "ed25519":
            raise SignatureError("signature is missing or not an ed25519 signature object")
        kid = signature.get("key_id")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise SignatureError(
                f"signed by key {kid!r}, which is not in the trust store "
                f"({len(self.keys)} trusted key(s)); copy its .pub file into the agent's trust folder"
            )
        sig = signature.get("sig")
        if not isinstance(sig, str):
            raise SignatureError("signature value 'sig' is missing or not a base64 string")
        try:
            key.verify(base64.b64decode(sig, validate=True), data)
        except (InvalidSignature, ValueError):
            raise SignatureError(f"signature by key {kid} does not match the signed content") from None
        return kid
