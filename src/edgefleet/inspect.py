"""`edgefleet inspect MODEL|BUNDLE`: what is inside, and whether the accelerators can run it.

Works on a device-only install: the flatbuffer is read with edgefleet.tflite_graph and the
readiness checks (edgefleet.converter.targets: edgetpu, npu, xnnpack_sparse) are pure Python.
"""

from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgefleet.file_kinds import MODEL_KINDS, describe, identify, model_not_bundle
from edgefleet.protocol.bundle import BundleError, check_contents, open_bundle, read_manifest_unverified
from edgefleet.protocol.signing import SignatureError, TrustStore

if TYPE_CHECKING:  # both load at use: inspect runs on installs without a runtime or the schema
    from edgefleet.runtime import TFLiteModel
    from edgefleet.tflite_graph import Graph


def readable_graph(data: bytes) -> Graph:
    """DATA's graph; ValueError that says it is not a readable TFLite model."""
    from edgefleet.tflite_graph import read_graph

    try:
        return read_graph(data)
    except ValueError as exc:
        raise ValueError(f"not a readable TFLite model: {exc}") from None


def analyse_model(data: bytes, graph: Graph | None = None,
                  model: TFLiteModel | None = None) -> dict[str, Any]:
    """Everything `inspect` says of the model DATA. GRAPH and MODEL: DATA parsed and loaded
    already by the caller, so that neither is done twice."""
    from edgefleet.converter.targets.edgetpu import check_edgetpu
    from edgefleet.converter.targets.npu import check_npu
    from edgefleet.converter.targets.xnnpack_sparse import check_xnnpack_sparse

    graph = graph or readable_graph(data)
    tensors = [t for ts in graph.tensors for t in ts]
    edgetpu = check_edgetpu(graph)
    return {
        "size_bytes": len(data),
        "subgraphs": graph.subgraphs,
        "op_counts": graph.op_counts(),
        "ops_total": len(graph.ops),
        # "name": what requests and answers call it (the signature's name, else the tensor's)
        "inputs": [{**t.as_dict(), "tensor": t.name, "name": graph.io_names.get(t.index, t.name)}
                   for t in graph.model_inputs],
        "outputs": [{**t.as_dict(), "tensor": t.name, "name": graph.io_names.get(t.index, t.name)}
                    for t in graph.model_outputs],
        "tensors": len(tensors),
        "tensor_types": dict(Counter(t.dtype for t in tensors)),
        "weight_types": dict(Counter(t.dtype for t in tensors if t.is_constant)),
        "weight_sparsity": round(graph.weight_sparsity(), 4),
        "layer_sparsity": {k: round(v, 4) for k, v in graph.layer_sparsity().items()},
        "min_runtime_version": graph.min_runtime_version,
        "edgetpu": {k: v for k, v in edgetpu.as_dict().items() if k != "ops"},
        "npu": check_npu(graph),
        "xnnpack_sparse": check_xnnpack_sparse(graph),
        "cpu_delegation": _cpu_delegation(data, model),
    }


def _cpu_delegation(data: bytes, model: TFLiteModel | None) -> dict[str, Any]:
    """What XNNPACK takes when this machine's runtime loads the model (measured, not predicted)."""
    if model is None:
        try:
            from edgefleet.runtime import RuntimeLoadError, TFLiteModel
        except ImportError as exc:
            return {"error": f"no TFLite runtime here: {exc}"}
        try:
            model = TFLiteModel(data, num_threads=1)
        except (RuntimeLoadError, ValueError) as exc:
            return {"error": str(exc)}
    return model.delegate.share or {"error": "this runtime does not list its nodes"}


def _tensor_line(t: dict[str, Any]) -> str:
    q = ""
    if t["scales"]:
        per = "per-channel, " if len(t["scales"]) > 1 else ""
        q = f" ({per}scale {t['scales'][0]:.6g}, zero point {t['zero_points'][0]})"
    tensor = f" (tensor {t['tensor']})" if t.get("tensor", t["name"]) != t["name"] else ""
    return f"    {t['name']}{tensor}: {t['dtype']}{t['shape_signature'] or t['shape']}{q}"


def model_text(a: dict[str, Any]) -> list[str]:
    ops = ", ".join(f"{name} x{n}" for name, n in sorted(a["op_counts"].items(), key=lambda kv: -kv[1]))
    tpu = a["edgetpu"]
    tpu_text = ("fully mappable" if tpu["fully_mappable"] else tpu["split"])
    return [
        f"  {a['size_bytes']:,} bytes, {a['subgraphs']} subgraph(s), {a['ops_total']} ops: {ops}",
        "  inputs:", *[_tensor_line(t) for t in a["inputs"]],
        "  outputs:", *[_tensor_line(t) for t in a["outputs"]],
        f"  weights: {', '.join(f'{k} x{v}' for k, v in sorted(a['weight_types'].items()))}; "
        f"sparsity {a['weight_sparsity']:.3f}",
        f"  Edge TPU (predicted, {tpu['ops_mapped']}/{tpu['ops_total']} ops): {tpu_text}",
        f"  NPU delegates: {a['npu'].get('summary', 'ready' if a['npu'].get('ready') else 'not ready')}",
        f"  XNNPACK sparse inference: {'applies' if a['xnnpack_sparse']['applies'] else 'does not apply'}",
        f"  on this machine's CPU: {_delegation_text(a.get('cpu_delegation') or {})}",
    ]


def _delegation_text(d: dict[str, Any]) -> str:
    if "error" in d:
        return f"not loaded ({d['error']})"
    left = ", ".join(f"{name} x{n}" for name, n in sorted(d["left_to_runtime_kernels"].items()))
    work = f"{100 * d['work_share']:.1f} %" if d["work_share"] is not None else "n/a"
    return (f"{d['delegate']} runs {d['ops_delegated']}/{d['ops_total']} ops ({work} of the estimated work)"
            + (f"; left to the runtime's own kernels: {left}" if left else ""))


def inspect_path(path: Path, trust_dir: Path | None = None) -> dict[str, Any]:
    kind = identify(path)
    if kind in MODEL_KINDS and kind != "tflite":  # a .tflite is inspected as it is
        raise ValueError(model_not_bundle(path))
    if path.is_dir():
        raise ValueError(f"{path} is a folder, neither a bundle nor a .tflite model")
    data = path.read_bytes()
    # the model first: published .tflite files often end with a zip of metadata files, which
    # makes zipfile take them for archives
    if data[4:8] == b"TFL3":  # the flatbuffer file identifier of TFLite models
        analysis = analyse_model(data)
        return {"kind": "tflite", **analysis,
                "text": "\n".join([f"tflite model {path.name}", *model_text(analysis)])}
    if zipfile.is_zipfile(path):
        return _inspect_bundle(path, data, trust_dir)
    raise ValueError(f"{path} is neither a bundle (zip) nor a .tflite model: it is {describe(path)}")


def _inspect_bundle(path: Path, data: bytes, trust_dir: Path | None) -> dict[str, Any]:
    try:
        manifest = read_manifest_unverified(data)
    except BundleError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except Exception as exc:  # a damaged zip fails deep in zipfile or zlib (zlib.error, EOFError...)
        raise ValueError(f"{path}: not a readable bundle, the container is damaged "
                         f"({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: not a readable bundle, manifest.json is not a JSON object")
    verified: dict[str, Any] = {"checked": False}
    if trust_dir is not None:
        try:
            bundle = open_bundle(data, TrustStore.from_folder(trust_dir))
            verified = {"checked": True, "ok": True, "signed_by": bundle.signed_by}
        except (BundleError, SignatureError) as exc:
            verified = {"checked": True, "ok": False, "reason": str(exc)}
    try:  # without --trust the signature is not checked, but damage still shows
        check_contents(data)
        contents: dict[str, Any] = {"ok": True}
    except BundleError as exc:
        contents = {"ok": False, "reason": str(exc)}
    model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    metrics = manifest.get("metrics") if isinstance(manifest.get("metrics"), dict) else {}
    analysis = None
    try:
        with zipfile.ZipFile(path) as zf:
            analysis = analyse_model(zf.read(model.get("file", "model.tflite")))
    except Exception:  # a damaged bundle (zlib.error, CRC errors...): the check lines say why
        pass
    lines = [
        f"bundle {manifest.get('name')} version {manifest.get('version')} "
        f"({len(data):,} bytes, format {manifest.get('format')})",
        f"  target {manifest.get('target', {}).get('profile')}, "
        f"delegate {manifest.get('runtime', {}).get('delegate')}, "
        f"variant {model.get('variant', model.get('quantization'))}",
        "  files:",
        *[f"    {n}: {_size(m)} bytes sha256 {str(m.get('sha256'))[:16]}..."
          for n, m in sorted(_files(manifest).items())],
    ]
    if metrics.get("float_top1") is not None and metrics.get("quantized_top1") is not None:
        lines.append(f"  top-1 float {100 * metrics['float_top1']:.2f}%, this model "
                     f"{100 * metrics['quantized_top1']:.2f}% on {metrics.get('eval_samples')} samples")
    if analysis is not None:
        lines += ["  model:", *[f"  {line}" for line in model_text(analysis)]]
    if verified["checked"]:
        lines.append("  signature and hashes: " + (
            f"OK (key {verified['signed_by']})" if verified["ok"] else f"REFUSED: {verified['reason']}"))
    elif not contents["ok"]:
        lines.append(f"  container and hashes: DAMAGED: {contents['reason']}")
    return {"kind": "bundle", "size_bytes": len(data), "manifest": manifest, "model": analysis,
            "verification": verified, "contents": contents, "text": "\n".join(lines)}


def _files(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    files = manifest.get("files")
    return {str(n): m for n, m in files.items() if isinstance(m, dict)} if isinstance(files, dict) else {}


def _size(meta: dict[str, Any]) -> str:
    size = meta.get("size")
    return f"{size:,}" if isinstance(size, int) else "?"
