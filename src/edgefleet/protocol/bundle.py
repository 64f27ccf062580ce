"""Bundle format v1: a zip holding manifest.json, its detached signature, the model,
the golden self-test set and the conversion report (see docs/protocol.md).

Zip because stdlib tools on every workstation open it (`unzip -l bundle.efb`).
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet.protocol.signing import SignatureError, Signer, TrustStore

FORMAT = "edgefleet.bundle/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MODEL = "model.tflite"
GOLDEN = "golden.npz"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
# A bundle larger than this when unpacked is refused before anything is read (zip bombs).
MAX_UNPACKED_BYTES = 512 * 1024 * 1024
_FIXED_ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # same inputs give the same bytes
# The model is stored, not deflated: trained weights shrink by a few per cent at most, and
# inflating 10 MB of them takes 0.1 s on every install and every start (Android keeps .tflite
# files uncompressed in APKs for the same reason, and so that they can be memory-mapped).
_STORED = {MODEL}
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then file name and extra field lengths


class BundleError(Exception):
    """The bundle cannot be used; the message says why in words an operator can act on."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Bundle:
    manifest: dict[str, Any]
    files: dict[str, bytes]
    signed_by: str

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def model_bytes(self) -> bytes:
        return self.files[self.manifest["model"]["file"]]


def write_bundle(
    path: str | Path, manifest: dict[str, Any], files: dict[str, bytes], key: Signer
) -> bytes:
    """Write a signed bundle to PATH and return its bytes.

    MANIFEST gets `format` and `files` (size and SHA-256 of every file) filled in here.
    """
    for required in (MODEL, GOLDEN):
        if required not in files:
            raise BundleError(f"a bundle needs {required}")
    manifest = dict(manifest)
    manifest["format"] = FORMAT
    manifest["files"] = {
        name: {"sha256": sha256_hex(data), "size": len(data)} for name, data in sorted(files.items())
    }
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    signature = json.dumps(key.sign(manifest_bytes), indent=2).encode() + b"\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in [(MANIFEST, manifest_bytes), (SIGNATURE, signature), *sorted(files.items())]:
            info = zipfile.ZipInfo(name, _FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_STORED if name in _STORED else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    data = buf.getvalue()
    Path(path).write_bytes(data)
    return data


def read_manifest_unverified(data: bytes) -> dict[str, Any]:
    """The manifest of a bundle without checking anything (for `inspect`)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            manifest = json.loads(zf.read(MANIFEST))
    except Exception as exc:  # a damaged zip raises from deep in zipfile or zlib (zlib.error, EOFError)
        raise BundleError(f"not a readable bundle: {type(exc).__name__}: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError("not a readable bundle: manifest.json is not an object")
    return manifest


def open_bundle(data: bytes, trust: TrustStore) -> Bundle:
    """Check a bundle completely (container, signature, every file's hash) and return it."""
    return _checked(data, trust)


def check_contents(data: bytes) -> Bundle:
    """Container and every file hash checked, the signature not (the publisher's check
    before it ships a bundle; `signed_by` is the key id the signature claims)."""
    return _checked(data, None)


def _checked(data: bytes, trust: TrustStore | None) -> Bundle:
    """Any failure becomes a BundleError: a damaged zip can raise from deep inside zipfile
    or zlib (seen: zlib.error, EOFError, NotImplementedError), and none of that may
    reach the daemon as anything but a reason to refuse the bundle."""
    try:
        return _open_bundle(data, trust)
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"the container is damaged: {type(exc).__name__}: {exc}") from None


def _open_bundle(data: bytes, trust: TrustStore | None) -> Bundle:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise BundleError(f"not a readable zip container: {exc}") from None
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        if sum(i.file_size for i in infos.values()) > MAX_UNPACKED_BYTES:
            raise BundleError(f"unpacks to more than {MAX_UNPACKED_BYTES} bytes; refused")
        for needed in (MANIFEST, SIGNATURE):
            if needed not in infos:
                raise BundleError(f"{needed} is missing from the bundle")
        try:
            manifest_bytes = zf.read(MANIFEST)
            signature = json.loads(zf.read(SIGNATURE))
        except (zipfile.BadZipFile, ValueError, OSError) as exc:
            raise BundleError(f"manifest or signature unreadable: {exc}") from None
        if trust is None:
            signed_by = str(signature.get("key_id", "")) if isinstance(signature, dict) else ""
        else:
            try:
                signed_by = trust.verify(manifest_bytes, signature)
            except SignatureError as exc:
                raise BundleError(f"bundle signature rejected: {exc}") from None
        try:
            manifest = json.loads(manifest_bytes)
        except ValueError as exc:
            raise BundleError(f"manifest.json is not JSON: {exc}") from None
        _check_manifest_shape(manifest)
        listed: dict[str, dict[str, Any]] = manifest["files"]
        extra = set(infos) - set(listed) - {MANIFEST, SIGNATURE}
        if extra:
            raise BundleError(f"files not listed in the manifest: {sorted(extra)}")
        files: dict[str, bytes] = {}
        for name, meta in listed.items():
            if name not in infos:
                raise BundleError(f"{name} is listed in the manifest but missing")
            if infos[name].file_size != meta["size"]:
                raise BundleError(f"{name} is {infos[name].file_size} bytes, manifest says {meta['size']}")
            try:
                content = _stored_bytes(data, infos[name]) or zf.read(name)
            except (zipfile.BadZipFile, OSError, ValueError) as exc:  # CRC errors land here
                raise BundleError(f"{name} is damaged in the container: {exc}") from None
            if sha256_hex(content) != meta["sha256"]:
                raise BundleError(f"{name} does not match its SHA-256 in the manifest: the bundle is damaged "
                                  "or was changed after it was signed")
            files[name] = content
    return Bundle(manifest=manifest, files=files, signed_by=signed_by)


def _stored_bytes(data: bytes, info: zipfile.ZipInfo) -> bytes | None:
    """A stored entry's bytes, sliced out of DATA (ZIP APPNOTE 4.3.7: a 30-byte local header,
    the name, the extra field, then the data): no CRC pass and no chunked copy as zipfile's
    reader makes, since the SHA-256 from the signed manifest is checked on them anyway.
    None for a deflated entry (zipfile reads those)."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    signature, name_len, extra_len = _LOCAL_HEADER.unpack_from(data, info.header_offset)
    if signature != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"no local header for {info.filename}")
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    if start + info.file_size > len(data):
        raise zipfile.BadZipFile(f"{info.filename} runs past the end of the container")
    return data[start:start + info.file_size]


def _check_manifest_shape(m: Any) -> None:
    if not isinstance(m, dict):
        raise BundleError("manifest.json is not an object")
    if m.get("format") != FORMAT:
        raise BundleError(f"bundle format {m.get('format')!r} is not {FORMAT!r}; upgrade the agent")
    for key, kind in (("name", str), ("version", str), ("files", dict), ("model", dict)):
        if not isinstance(m.get(key), kind):
            raise BundleError(f"manifest field {key!r} is missing or not a {kind.__name__}")
    for name, meta in m["files"].items():
        if not (isinstance(meta, dict) and isinstance(meta.get("sha256"), str)
                and isinstance(meta.get("size"), int)):
            raise BundleError(f"manifest entry for {name!r} needs sha256 and size")
    model_file = m["model"].get("file")
    if model_file not in m["files"]:
        raise BundleError(f"model file {model_file!r} is not among the bundle's files")
