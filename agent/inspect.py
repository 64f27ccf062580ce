"""What is inside a bundle or a .tflite file, for `edgefleet inspect`.

The full model analysis (ops, sparsity, Edge TPU readiness) comes with the converter;
this shows the manifest, verifies a bundle against a trust folder, and lists tensors.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from agent.bundle import BundleError, open_bundle, read_manifest_unverified
from agent.signing import SignatureError, TrustStore


def _tensor_lines(specs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for s in specs:
        q = f" scale={s['scale']:.6g} zero_point={s['zero_point']}" if s.get("scale") else ""
        lines.append(f"    {s['name']}: {s['dtype']}{s['shape']}{q}")
    return lines


def inspect_tflite(data: bytes) -> dict[str, Any]:
    from agent.runtime import RuntimeLoadError, TFLiteModel

    try:
        model = TFLiteModel(data)
    except RuntimeLoadError as exc:
        raise ValueError(str(exc)) from None
    inputs = [s.as_dict() for s in model.inputs]
    outputs = [s.as_dict() for s in model.outputs]
    text = "\n".join([f"tflite model, {len(data)} bytes", "  inputs:", *_tensor_lines(inputs),
                      "  outputs:", *_tensor_lines(outputs)])
    return {"kind": "tflite", "size_bytes": len(data), "inputs": inputs, "outputs": outputs,
            "text": text}


def inspect_bundle(data: bytes, trust_dir: Path | None) -> dict[str, Any]:
    manifest = read_manifest_unverified(data)
    verified: dict[str, Any] = {"checked": False}
    if trust_dir is not None:
        try:
            bundle = open_bundle(data, TrustStore.from_folder(trust_dir))
            verified = {"checked": True, "ok": True, "signed_by": bundle.signed_by}
        except (BundleError, SignatureError) as exc:
            verified = {"checked": True, "ok": False, "reason": str(exc)}
    model = manifest.get("model", {})
    metrics = manifest.get("metrics", {})
    lines = [
        f"bundle {manifest.get('name')} version {manifest.get('version')} "
        f"({len(data)} bytes, format {manifest.get('format')})",
        f"  target {manifest.get('target', {}).get('profile')}, "
        f"delegate {manifest.get('runtime', {}).get('delegate')}, "
        f"quantisation {model.get('quantization')}",
        "  files:",
        *[f"    {n}: {m.get('size')} bytes sha256 {str(m.get('sha256'))[:16]}..."
          for n, m in sorted(manifest.get("files", {}).items())],
        "  inputs:", *_tensor_lines(model.get("inputs", [])),
        "  outputs:", *_tensor_lines(model.get("outputs", [])),
    ]
    if metrics.get("float_top1") is not None:
        lines.append(f"  top-1 float {metrics['float_top1']:.4f}, quantised "
                     f"{metrics.get('quantized_top1'):.4f} on {metrics.get('eval_samples')} samples")
    if verified["checked"]:
        lines.append("  signature and hashes: " + (
            f"OK (key {verified['signed_by']})" if verified["ok"] else f"REFUSED: {verified['reason']}"))
    return {"kind": "bundle", "size_bytes": len(data), "manifest": manifest,
            "verification": verified, "text": "\n".join(lines)}


def inspect_path(path: Path, trust_dir: Path | None = None) -> dict[str, Any]:
    data = path.read_bytes()
    if zipfile.is_zipfile(path):
        try:
            return inspect_bundle(data, trust_dir)
        except BundleError as exc:
            raise ValueError(f"{path}: {exc}") from None
    if data[4:8] == b"TFL3":  # the flatbuffer file identifier of TFLite models
        return inspect_tflite(data)
    raise ValueError(f"{path} is neither a bundle (zip) nor a .tflite model")
