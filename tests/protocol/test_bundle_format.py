"""Bundle format v1: signed, hashed, refused with a reason when anything is off."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from edgefleet.protocol.bundle import BundleError, open_bundle, read_manifest_unverified, write_bundle
from edgefleet.protocol.signing import SigningKey, TrustStore, generate_keypair


def _golden() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, inputs=np.zeros((2, 3), np.float32), reference_outputs=np.eye(2, 3, dtype=np.float32))
    return buf.getvalue()


@pytest.fixture
def files() -> dict[str, bytes]:
    return {"model.tflite": b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 40,
            "golden.npz": _golden(), "report.json": b"{}"}


@pytest.fixture
def manifest() -> dict:
    return {"name": "toy", "version": "3", "model": {"file": "model.tflite"},
            "selftest": {"file": "golden.npz"}}


def test_round_trip_verifies_and_lists_every_file_hash(tmp_path, keys, files, manifest):
    key, trust_dir = keys.key, keys.trust_dir
    data = write_bundle(tmp_path / "b.efb", manifest, files, key)
    bundle = open_bundle(data, TrustStore.from_folder(trust_dir))
    assert bundle.name == "toy" and bundle.version == "3"
    assert bundle.files == files
    assert bundle.signed_by == key.key_id
    assert set(bundle.manifest["files"]) == set(files)
    # a standard zip that stdlib tools open
    assert {"manifest.json", "manifest.sig", *files} == set(zipfile.ZipFile(tmp_path / "b.efb").namelist())


def test_same_inputs_give_identical_bytes(tmp_path, keys, files, manifest):
    key = keys.key
    first = write_bundle(tmp_path / "a", manifest, files, key)
    assert first == write_bundle(tmp_path / "b", manifest, files, key)


def test_every_single_flipped_byte_is_refused(tmp_path, keys, files, manifest):
    key, trust_dir = keys.key, keys.trust_dir
    trust = TrustStore.from_folder(trust_dir)
    data = write_bundle(tmp_path / "b.efb", manifest, files, key)
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x01
        try:
            open_bundle(bytes(damaged), trust)
        except BundleError as exc:
            assert str(exc)  # a reason, never an empty message
        else:
            # zip headers carry a few fields nobody reads (e.g. 'version made by');
            # flipping those must still leave a bundle whose content is exactly the original
            assert open_bundle(bytes(damaged), trust).files == files


def test_flipped_byte_in_model_names_the_file(tmp_path, keys, files, manifest):
    key, trust_dir = keys.key, keys.trust_dir
    buf = io.BytesIO()
    data = write_bundle(tmp_path / "b.efb", manifest, files, key)
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            content = src.read(info.filename)
            if info.filename == "model.tflite":
                content = content[:100] + bytes([content[100] ^ 0xFF]) + content[101:]
            dst.writestr(info, content)  # a well-formed zip whose model differs by one byte
    with pytest.raises(BundleError, match=r"model\.tflite does not match its SHA-256"):
        open_bundle(buf.getvalue(), TrustStore.from_folder(trust_dir))


def test_unknown_signer_is_refused_with_hint(tmp_path, keys, files, manifest):
    trust_dir = keys.trust_dir
    private, _ = generate_keypair(tmp_path / "other")
    data = write_bundle(tmp_path / "b.efb", manifest, files, SigningKey.load(private))
    with pytest.raises(BundleError, match=r"not in the trust store.*trust folder"):
        open_bundle(data, TrustStore.from_folder(trust_dir))


def test_empty_trust_store_refuses_everything(tmp_path, keys, files, manifest):
    key = keys.key
    data = write_bundle(tmp_path / "b.efb", manifest, files, key)
    with pytest.raises(BundleError, match="0 trusted key"):
        open_bundle(data, TrustStore.from_folder(tmp_path / "empty"))


def test_file_smuggled_into_container_is_refused(tmp_path, keys, files, manifest):
    key, trust_dir = keys.key, keys.trust_dir
    data = write_bundle(tmp_path / "b.efb", manifest, files, key)
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr("extra.sh", b"rm -rf /")
    with pytest.raises(BundleError, match="not listed"):
        open_bundle(buf.getvalue(), TrustStore.from_folder(trust_dir))


def test_not_a_zip_is_refused(keys):
    with pytest.raises(BundleError, match="zip"):
        open_bundle(b"hello", TrustStore.from_folder(keys.trust_dir))


def test_manifest_readable_without_keys(tmp_path, keys, files, manifest):
    data = write_bundle(tmp_path / "b.efb", manifest, files, keys.key)
    m = read_manifest_unverified(data)
    assert m["format"] == "edgefleet.bundle/1"
    assert json.loads(json.dumps(m)) == m


def test_missing_golden_set_cannot_be_written(tmp_path, keys, manifest):
    with pytest.raises(BundleError, match=r"golden\.npz"):
        write_bundle(tmp_path / "b", manifest, {"model.tflite": b"x"}, keys.key)
