"""Ed25519 key files: ours are the PEM forms OpenSSL writes and reads, and OpenSSL's work
here; anything else is refused with what it is."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest

from edgefleet.protocol.signing import SignatureError, SigningKey, TrustStore, generate_keypair

openssl = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(openssl is None, reason="the openssl command is not installed")


def _openssl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([openssl, *args], input=data, capture_output=True, check=False)  # type: ignore[list-item]


@needs_openssl
def test_openssl_reads_our_keys_and_verifies_our_signature(tmp_path):
    private, public = generate_keypair(tmp_path)
    text = _openssl("pkey", "-in", str(private), "-text", "-noout")
    assert text.returncode == 0 and b"ED25519 Private-Key" in text.stdout, text.stderr
    derived = _openssl("pkey", "-in", str(private), "-pubout")
    assert derived.stdout == public.read_bytes()  # the same public key, byte for byte
    data = b"the signed content"
    signature = base64.b64decode(SigningKey.load(private).sign(data)["sig"])
    (tmp_path / "data").write_bytes(data)
    (tmp_path / "sig").write_bytes(signature)
    verified = _openssl("pkeyutl", "-verify", "-pubin", "-inkey", str(public), "-rawin",
                        "-in", str(tmp_path / "data"), "-sigfile", str(tmp_path / "sig"))
    assert verified.returncode == 0, verified.stdout + verified.stderr


@needs_openssl
def test_a_key_openssl_made_signs_for_our_trust_store(tmp_path):
    private, trust = tmp_path / "op.key", tmp_path / "trust"
    trust.mkdir()
    assert _openssl("genpkey", "-algorithm", "ed25519", "-out", str(private)).returncode == 0
    (trust / "op.pub").write_bytes(_openssl("pkey", "-in", str(private), "-pubout").stdout)
    key = SigningKey.load(private)
    store = TrustStore.from_folder(trust)
    assert store.verify(b"x", key.sign(b"x")) == key.key_id
    with pytest.raises(SignatureError, match="does not match"):
        store.verify(b"y", key.sign(b"x"))


@needs_openssl
def test_other_key_types_are_refused_with_what_they_are(tmp_path):
    rsa = tmp_path / "rsa.key"
    assert _openssl("genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:1024",
                    "-out", str(rsa)).returncode == 0
    with pytest.raises(SignatureError, match="not an Ed25519 key"):
        SigningKey.load(rsa)
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "rsa.pub").write_bytes(_openssl("pkey", "-in", str(rsa), "-pubout").stdout)
    with pytest.raises(SignatureError, match=r"rsa\.pub is not an Ed25519 PEM public key"):
        TrustStore.from_folder(trust)


@pytest.mark.parametrize("text, reason", [
    (b"", "expected a PEM block"),
    (b"not a key at all\n", "expected a PEM block"),
    (b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n", "not base64"),
    (b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n", "expected a PEM block"),
])
def test_broken_private_key_files_say_why(tmp_path, text, reason):
    path = tmp_path / "bad.key"
    path.write_bytes(text)
    with pytest.raises(SignatureError, match=reason):
        SigningKey.load(path)


def test_a_private_key_in_the_trust_folder_is_refused(tmp_path):
    private, _ = generate_keypair(tmp_path / "keys")
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "oops.pub").write_bytes(private.read_bytes())
    with pytest.raises(SignatureError, match=r"oops\.pub .*BEGIN PUBLIC KEY"):
        TrustStore.from_folder(trust)


def test_a_short_or_garbled_signature_is_a_mismatch_not_a_crash(tmp_path):
    private, _ = generate_keypair(tmp_path / "keys")
    store = TrustStore.from_folder(tmp_path / "keys")
    signature = SigningKey.load(private).sign(b"x")
    for sig in (base64.b64encode(b"short").decode(), "", base64.b64encode(bytes(64)).decode()):
        with pytest.raises(SignatureError, match="does not match"):
            store.verify(b"x", {**signature, "sig": sig})
