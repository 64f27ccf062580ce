"""Ed25519 keys, signatures and the agent's trust store (a folder of public keys and the
list of revoked key ids, `revoked.txt`).

The signatures come from PyNaCl (libsodium). Key files are the PEM forms that OpenSSL and
`cryptography` write for Ed25519 (PKCS#8 private keys, SubjectPublicKeyInfo public keys,
RFC 8410), so keys made by either tool work here and ours work there. PyNaCl reads no PEM,
and `cryptography`, which does, costs a board several times PyNaCl's resident memory for
this alone (benchmarks/agent_choices_bench.py); an Ed25519 key in these forms is a fixed
DER prefix and 32 bytes (RFC 8410, section 10), so `_pem_key` and `_pem` do it by hand.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey as _NaclSigningKey
from nacl.signing import VerifyKey

PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"
REVOKED_FILE = "revoked.txt"  # one line per revoked key: "<key id> <reason>"; '#' starts a comment
UNSIGNED_ID = "unsigned"
_KEY_ID = re.compile(r"[0-9a-f]{16}")
# DER before the 32 key bytes (RFC 8410, section 10): PKCS#8 v1 holding the seed, and
# SubjectPublicKeyInfo, both with the id-Ed25519 algorithm (1.3.101.112)
_PRIVATE_DER = bytes.fromhex("302e020100300506032b657004220420")
_PUBLIC_DER = bytes.fromhex("302a300506032b6570032100")
_PEM_LABELS = {_PRIVATE_DER: "PRIVATE KEY", _PUBLIC_DER: "PUBLIC KEY"}


class SignatureError(Exception):
    """A signature is missing, malformed, from an unknown key, or does not verify."""


def _pem(prefix: bytes, key: bytes) -> bytes:
    label = _PEM_LABELS[prefix]
    body = base64.encodebytes(prefix + key).decode()  # 76-character lines, as PEM wants
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n".encode()


def _pem_key(text: bytes, prefix: bytes) -> bytes:
    """The 32 key bytes of an Ed25519 PEM file; ValueError saying what it holds instead."""
    label = _PEM_LABELS[prefix]
    lines = text.decode("ascii", "replace").strip().splitlines()
    if len(lines) < 3 or lines[0] != f"-----BEGIN {label}-----" or lines[-1] != f"-----END {label}-----":
        raise ValueError(f"expected a PEM block '-----BEGIN {label}-----'")
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except binascii.Error:
        raise ValueError("the PEM body is not base64") from None
    if len(der) != len(prefix) + 32 or not der.startswith(prefix):
        raise ValueError("it is not an Ed25519 key (RFC 8410); other key types are not supported")
    return der[len(prefix):]


def canonical_json(obj: Any) -> bytes:
    """The exact bytes that get signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public_key: VerifyKey) -> str:
    return hashlib.sha256(bytes(public_key)).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    private_key: _NaclSigningKey

    @property
    def key_id(self) -> str:
        return key_id(self.private_key.verify_key)

    def sign(self, data: bytes) -> dict[str, str]:
        sig = self.private_key.sign(data).signature
        return {"alg": "ed25519", "key_id": self.key_id, "sig": base64.b64encode(sig).decode()}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        path = Path(path)
        try:
            seed = _pem_key(path.read_bytes(), _PRIVATE_DER)
        except FileNotFoundError:
            raise SignatureError(
                f"signing key {path} not found: create one with 'edgefleet keys generate'"
            ) from None
        except ValueError as exc:
            raise SignatureError(f"{path} is not an Ed25519 PEM private key: {exc}") from None
        return cls(_NaclSigningKey(seed))


class Unsigned:
    """Stands in for a signing key where the operator asked for no signature (`--unsigned`):
    agents take what it "signs" only with `[trust] allow_unsigned = true`."""

    key_id = UNSIGNED_ID

    def sign(self, data: bytes) -> dict[str, str]:
        return {"alg": "none"}


UNSIGNED = Unsigned()
Signer = SigningKey | Unsigned


def load_signer(path: str | os.PathLike[str] | None) -> Signer:
    """The private key at PATH; None: no signature (--unsigned)."""
    return UNSIGNED if path is None else SigningKey.load(path)


def check_key_id(value: str) -> str:
    if not _KEY_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a key id (16 lowercase hex digits, as edgefleet keys list shows)")
    return value


def read_revoked(folder: str | os.PathLike[str]) -> dict[str, str]:
    """The revoked key ids in FOLDER/revoked.txt and the reason given for each."""
    path = Path(folder) / REVOKED_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:  # fail closed: an unreadable list trusts nothing
        raise SignatureError(f"the revocation list {path} cannot be read: {exc}") from None
    revoked = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            kid, _, reason = line.partition(" ")
            if not _KEY_ID.fullmatch(kid):
                raise SignatureError(f"{path} line {number}: {kid!r} is not a key id (16 hex digits)")
            revoked[kid] = reason.strip() or "no reason given"
    return revoked


def generate_keypair(folder: str | os.PathLike[str], name: str = "signing") -> tuple[Path, Path]:
    """Write NAME.key (private, mode 0600) and NAME.pub into FOLDER; never overwrite."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / f"{name}{PRIVATE_SUFFIX}", folder / f"{name}{PUBLIC_SUFFIX}"
    for p in (private_path, public_path):
        if p.exists():
            raise FileExistsError(f"{p} exists; choose another --name or folder")
    key = _NaclSigningKey.generate()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(_pem(_PRIVATE_DER, bytes(key)))
    public_path.write_bytes(_pem(_PUBLIC_DER, bytes(key.verify_key)))
    return private_path, public_path


def _public_key(path: Path) -> VerifyKey:
    try:
        return VerifyKey(_pem_key(path.read_bytes(), _PUBLIC_DER))
    except ValueError as exc:
        raise SignatureError(f"{path} is not an Ed25519 PEM public key: {exc}") from None


def trust_key(public_key: str | os.PathLike[str], folder: str | os.PathLike[str]) -> tuple[str, Path, bool]:
    """Copy PUBLIC_KEY into FOLDER as <key id>.pub; (key id, file, whether it was added)."""
    folder = Path(folder)
    kid = key_id(_public_key(Path(public_key)))
    store = TrustStore.from_folder(folder)
    if kid in store.revoked:
        raise SignatureError(f"key {kid} is revoked in {folder / REVOKED_FILE}; remove its line there to "
                             "trust it again")
    present = store.files.get(kid)
    if present is not None:
        return kid, present, False
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{kid}{PUBLIC_SUFFIX}"
    target.write_bytes(Path(public_key).read_bytes())
    return kid, target, True


def revoke_key(folder: str | os.PathLike[str], kid: str, reason: str) -> tuple[Path, bool]:
    """List KID in FOLDER/revoked.txt with REASON; (the list, whether it was added)."""
    check_key_id(kid)
    path = Path(folder) / REVOKED_FILE
    if kid in read_revoked(folder):
        return path, False
    reason = " ".join(reason.replace("#", " ").split()) or "no reason given"  # one line, no comment
    text = path.read_text(encoding="utf-8") if path.exists() else \
        "# key ids whose signatures agents refuse: <key id> <reason>\n"
    tmp = path.with_name(f".{REVOKED_FILE}.tmp")  # whole or not at all: agents read it at any time
    tmp.write_text(text + ("" if text.endswith("\n") else "\n") + f"{kid} {reason}\n", encoding="utf-8")
    os.replace(tmp, path)
    return path, True


class TrustStore:
    """Public keys the agent accepts signatures from: every *.pub file in one folder, less
    the key ids its revoked.txt lists. ALLOW_UNSIGNED (a development setting) takes what
    carries no signature, as signed by "unsigned"."""

    def __init__(self, keys: dict[str, VerifyKey], revoked: dict[str, str] | None = None,
                 allow_unsigned: bool = False, files: dict[str, Path] | None = None):
        """FILES: where each key was read from (from_folder)."""
        self.keys, self.revoked, self.allow_unsigned = keys, revoked or {}, allow_unsigned
        self.files = files or {}

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], allow_unsigned: bool = False) -> TrustStore:
        folder = Path(folder)
        keys: dict[str, VerifyKey] = {}
        files: dict[str, Path] = {}
        if folder.is_dir():
            for path in sorted(folder.glob(f"*{PUBLIC_SUFFIX}")):
                key = _public_key(path)
                keys[key_id(key)], files[key_id(key)] = key, path
        return cls(keys, read_revoked(folder), allow_unsigned, files)

    def without_revocations(self) -> TrustStore:
        """The same keys with none revoked: to check a stored bundle whose key was revoked after
        it was installed, and report that rather than call it damaged."""
        return TrustStore(self.keys, {}, self.allow_unsigned, self.files)

    def verify(self, data: bytes, signature: Any) -> str:
        """Return the key id that signed DATA, or raise SignatureError saying why not."""
        if signature == {"alg": "none"}:
            if self.allow_unsigned:
                return UNSIGNED_ID
            raise SignatureError("it is unsigned (made with --unsigned); agents take unsigned bundles "
                                 "only with [trust] allow_unsigned = true, a development setting")
        if not isinstance(signature, dict) or signature.get("alg") != "ed25519":
            raise SignatureError("signature is missing or not an ed25519 signature object")
        kid = signature.get("key_id")
        if isinstance(kid, str) and kid in self.revoked:
            raise SignatureError(f"signed by key {kid}, which is revoked ({self.revoked[kid]}) in the "
                                 f"trust folder's {REVOKED_FILE}")
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
            key.verify(data, base64.b64decode(sig, validate=True))
        except (BadSignatureError, ValueError):
            raise SignatureError(f"signature by key {kid} does not match the signed content") from None
        return kid
