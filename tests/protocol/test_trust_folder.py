"""The trust folder (issue 10, item 3): several keys, revocation in revoked.txt, unsigned
content only by a development setting, and `edgefleet keys trust|revoke|list`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgefleet.cli import main
from edgefleet.protocol.signing import (
    REVOKED_FILE,
    UNSIGNED,
    SignatureError,
    SigningKey,
    TrustStore,
    generate_keypair,
    revoke_key,
    trust_key,
)


@pytest.fixture()
def two_keys(tmp_path):
    """Keys a and b, both in one trust folder."""
    trust = tmp_path / "trust"
    keys = {}
    for name in ("a", "b"):
        private, public = generate_keypair(tmp_path / name, name)
        trust_key(public, trust)
        keys[name] = SigningKey.load(private)
    return trust, keys


def test_a_revoked_key_is_refused_with_its_reason_and_the_others_still_verify(two_keys):
    trust, keys = two_keys
    data = b"content"
    assert TrustStore.from_folder(trust).verify(data, keys["b"].sign(data)) == keys["b"].key_id
    revoke_key(trust, keys["b"].key_id, "laptop lost # in a taxi")
    store = TrustStore.from_folder(trust)
    kid = keys["b"].key_id
    with pytest.raises(SignatureError, match=rf"key {kid}, which is revoked \(laptop lost in a taxi\)"):
        store.verify(data, keys["b"].sign(data))
    assert store.verify(data, keys["a"].sign(data)) == keys["a"].key_id
    assert store.without_revocations().verify(data, keys["b"].sign(data)) == keys["b"].key_id
    assert revoke_key(trust, keys["b"].key_id, "again")[1] is False  # listed once


def test_a_revocation_list_that_cannot_be_read_trusts_nothing(two_keys):
    trust, _ = two_keys
    (trust / REVOKED_FILE).write_text("not-a-key-id stolen\n")
    with pytest.raises(SignatureError, match="line 1: 'not-a-key-id' is not a key id"):
        TrustStore.from_folder(trust)
    (trust / REVOKED_FILE).write_bytes(b"\xff\xfe")
    with pytest.raises(SignatureError, match="cannot be read"):
        TrustStore.from_folder(trust)


def test_trusting_a_key_copies_it_once_and_never_a_revoked_one(two_keys, tmp_path):
    trust, keys = two_keys
    assert sorted(p.name for p in trust.glob("*.pub")) == sorted(f"{k.key_id}.pub" for k in keys.values())
    kid, path, added = trust_key(tmp_path / "a" / "a.pub", trust)
    assert (kid, added) == (keys["a"].key_id, False) and path.name == f"{kid}.pub"
    revoke_key(trust, kid, "rotated")
    (trust / f"{kid}.pub").unlink()
    with pytest.raises(SignatureError, match="is revoked"):
        trust_key(tmp_path / "a" / "a.pub", trust)
    (tmp_path / "junk.pub").write_text("hello")
    with pytest.raises(SignatureError, match="not an Ed25519 PEM public key"):
        trust_key(tmp_path / "junk.pub", trust)


def test_unsigned_content_is_taken_only_with_the_development_setting(two_keys):
    trust, _ = two_keys
    signature = UNSIGNED.sign(b"content")
    with pytest.raises(SignatureError, match=r"unsigned \(made with --unsigned\).*allow_unsigned = true"):
        TrustStore.from_folder(trust).verify(b"content", signature)
    assert TrustStore.from_folder(trust, allow_unsigned=True).verify(b"content", signature) == "unsigned"
    with pytest.raises(SignatureError, match="not an ed25519 signature object"):  # no other alg sneaks in
        TrustStore.from_folder(trust, allow_unsigned=True).verify(b"content", {"alg": "none", "x": 1})


def test_keys_trust_revoke_and_list_on_the_command_line(tmp_path):
    runner = CliRunner()
    for name in ("a", "b"):
        made = runner.invoke(main, ["keys", "generate", "--dir", str(tmp_path / name), "--name", name])
        assert made.exit_code == 0, made.output
    trust = tmp_path / "trust"
    added = runner.invoke(main, ["keys", "trust", str(tmp_path / "a" / "a.pub"), "--dir", str(trust),
                                 "--json"])
    assert added.exit_code == 0, added.output
    kid_a = json.loads(added.output)["key_id"]
    text = runner.invoke(main, ["keys", "trust", str(tmp_path / "b" / "b.pub"), "--dir", str(trust)]).output
    assert text.startswith("key ") and "trusted:" in text
    again = runner.invoke(main, ["keys", "trust", str(tmp_path / "a" / "a.pub"), "--dir", str(trust)])
    assert "was trusted already" in again.output
    revoked = runner.invoke(main, ["keys", "revoke", kid_a, "--dir", str(trust), "--reason", "laptop lost"])
    assert revoked.exit_code == 0 and f"key {kid_a} revoked in" in revoked.output, revoked.output
    listing = json.loads(runner.invoke(main, ["keys", "list", str(trust), "--json"]).output)
    states = {row["key_id"]: row["revoked"] for row in listing["keys"]}
    assert states[kid_a] == "laptop lost" and list(states.values()).count(None) == 1
    assert kid_a not in listing["key_ids"]  # key_ids: the keys signatures are accepted from
    plain = runner.invoke(main, ["keys", "list", str(trust)]).output
    assert f"{kid_a}  revoked: laptop lost" in plain
    bad = runner.invoke(main, ["keys", "revoke", "zz", "--dir", str(trust)])
    assert bad.exit_code == 1 and "'zz' is not a key id" in bad.output
    missing = runner.invoke(main, ["keys", "revoke", kid_a, "--dir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
