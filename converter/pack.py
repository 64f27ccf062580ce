"""`edgefleet pack`: a .tflite that is ready as it is (quantised already, float16, sparse, or
plain float) goes into a signed bundle byte for byte, with its golden self-test set, the
inspection of `edgefleet inspect` and a short report.

Nothing here converts, so nothing needs TensorFlow: the golden set is the model's own
answers (converter.golden.build_golden) on inputs from --data, or on inputs generated
from the input specs, which then test the board's runtime but say nothing of accuracy.
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import edgefleet
from edgefleet.compat import DEFAULT_REQUIRES, MIN_RUNTIME_VERSIONS
from edgefleet.converter.artifacts import check_out_path, encode_report, report_paths
from edgefleet.converter.early_checks import check_bundle_version
from edgefleet.converter.errors import ConversionError
from edgefleet.converter.golden import build_golden, class_score_outputs, golden_budget
from edgefleet.converter.targets.profile import resolve_target
from edgefleet.protocol.bundle import (
    GOLDEN,
    MODEL,
    REPORT_JSON,
    REPORT_MD,
    read_manifest_unverified,
    write_bundle,
)
from edgefleet.protocol.signing import SignatureError, load_signer
from edgefleet.runtime import RuntimeLoadError, TFLiteModel
from edgefleet.tensors import Arrays, InputError, TensorSpec, named_inputs
from edgefleet.tflite_graph import Graph

GENERATED_SAMPLES = 64  # inputs made up when no --data is given
CLASS_CHECK_SAMPLES = 64  # samples run to tell class-score outputs from the rest
VARIANT = "as-is"  # the manifest's variant name: the file as it was given
GENERATED_WARNING = (
    "no --data given: the golden self-test set holds generated inputs (uniform 0..1 for float "
    "inputs, the whole range for quantised ones), so the self-test on the board checks its runtime "
    "gives this model's answers, not that the model is accurate on real data")
Say = Callable[[str], None]


@dataclass(frozen=True)
class PackResult:
    bundle_path: Path
    bundle_size: int
    manifest: dict[str, Any]
    report: dict[str, Any]
    report_paths: dict[str, Path]


def stored_mode(graph: Graph) -> str:
    """How the model stores its numbers, in converter.quantization.modes' words."""
    constants = [t for ts in graph.tensors for t in ts if t.is_constant]
    activations = [t for ts in graph.tensors for t in ts if not t.is_constant]
    if any(t.dtype == "int16" and t.is_quantized for t in activations):
        return "int16x8"
    if any(t.dtype in ("int8", "uint8") and t.is_quantized for t in activations):
        return "int8"
    if any(t.dtype in ("int8", "uint8", "int4") and t.is_quantized for t in constants):
        return "dynamic"
    if any(t.dtype == "float16" for t in constants):
        return "float16"
    return "float32"


def pack(model_path: str | Path, out_path: str | Path, key_path: str | Path | None, *,
         data_path: str | Path | None = None, name: str | None = None, version: str = "1",
         target: str | None = None, force: bool = False, progress: Say | None = None) -> PackResult:
    """Bundle MODEL_PATH unchanged at OUT_PATH, signed with the key at KEY_PATH (an existing
    bundle there is replaced only with FORCE)."""
    from edgefleet.inspect import analyse_model, readable_graph

    say = progress or (lambda _m: None)
    model_path, out_path = Path(model_path), Path(out_path)
    name = name if name is not None else model_path.stem
    if not name.strip():
        raise ConversionError("the bundle name is empty")
    check_bundle_version(str(version))
    if out_path.is_dir():
        raise ConversionError(f"output {out_path} is a directory; give a file name such as m.efb")
    try:
        key = load_signer(key_path)  # None: --unsigned
    except SignatureError as exc:
        raise ConversionError(str(exc)) from None
    board = resolve_target(target)
    check_out_path(model_path, out_path, force)
    data = model_path.read_bytes()
    say(f"loading {model_path}")
    try:
        graph = readable_graph(data)
        model = TFLiteModel(data)
    except (ValueError, RuntimeLoadError) as exc:
        raise ConversionError(f"{model_path}: {exc}") from None
    analysis = analyse_model(data, graph, model)  # parsed and loaded once, here
    mode = stored_mode(graph)
    if board.allowed_modes and mode not in board.allowed_modes:
        raise ConversionError(f"target {board.name} runs {', '.join(board.allowed_modes)} models; "
                              f"{model_path} is {mode}")
    warnings: list[str] = []
    if data_path is not None:
        say(f"loading inputs {data_path}")
        pool, classes = load_inputs(model, Path(data_path))
    else:
        pool, classes = generated_inputs(model.inputs, GENERATED_SAMPLES), None
        warnings.append(GENERATED_WARNING)
    say("choosing golden self-test samples")
    try:
        head = {n: a[:CLASS_CHECK_SAMPLES] for n, a in pool.items()}
        outputs, _ = model.run(head)
        class_outputs = class_score_outputs(model, outputs, classes)
        golden, selftest = build_golden(model, pool, class_outputs, golden_budget(len(data)))
    except (InputError, RuntimeError, ValueError) as exc:
        raise ConversionError(f"{model_path} does not run on these inputs: {exc}") from None

    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    runtime = f"{model.runtime.name} {model.runtime.version}"
    manifest = {
        "name": name, "version": str(version), "created_at": created,
        "target": {"profile": board.name, "accelerator": board.accelerator},
        "runtime": {"delegate": board.delegate, "delegate_library": board.library,
                    "delegate_options": dict(board.options), "min_versions": dict(MIN_RUNTIME_VERSIONS)},
        "requires": copy.deepcopy(DEFAULT_REQUIRES),  # checked by devices before they download it
        "model": {"file": MODEL, "quantization": mode, "variant": VARIANT, "size_bytes": len(data),
                  "inputs": [s.as_dict() for s in model.inputs],
                  "outputs": [s.as_dict() for s in model.outputs]},
        "selftest": selftest,
        "metrics": {"model_size_bytes": len(data)},
        "converter": {"edgefleet": edgefleet.__version__, "command": "pack", "runtime": runtime},
    }
    report = {
        "schema": "edgefleet.pack-report/1", "name": name, "version": str(version), "created_at": created,
        "target": manifest["target"],
        "source": {"file": model_path.name, "sha256": hashlib.sha256(data).hexdigest(),
                   "size_bytes": len(data), "stored_as": mode,
                   "sparse": any(t.is_sparse for ts in graph.tensors for t in ts)},
        "model": manifest["model"], "inspection": analysis,
        "golden": {"inputs": "data" if data_path is not None else "generated",
                   "data": None if data_path is None else Path(data_path).name,
                   "pool_samples": len(next(iter(pool.values()))), "class_score_outputs": class_outputs},
        "selftest": selftest,
        "machine": {"cpu": platform.processor() or platform.machine(), "runtime": runtime},
        "warnings": warnings,
    }
    report_json, report_md = encode_report(report), render_pack_markdown(report).encode()
    say(f"writing signed bundle {out_path}")
    paths = report_paths(out_path)
    del paths["png"]
    try:
        bundle = write_bundle(out_path, manifest, {MODEL: data, GOLDEN: golden, REPORT_JSON: report_json,
                                                   REPORT_MD: report_md}, key)
        paths["json"].write_bytes(report_json)
        paths["md"].write_bytes(report_md)
    except OSError as exc:
        for path in (out_path, *paths.values()):
            if path.is_file():
                path.unlink()
        raise ConversionError(f"cannot write the bundle or its report: {exc}") from None
    return PackResult(out_path, len(bundle), read_manifest_unverified(bundle), report, paths)


def load_inputs(model: TFLiteModel, path: Path) -> tuple[Arrays, int | None]:
    """Inputs by input name from an .npz: one array per input (by its name or its tensor's
    name), or `x` for a one-input model; with labels `y`, also the number of classes."""
    if path.suffix.lower() != ".npz":
        raise ConversionError(f"--data {path}: give an .npz with one array per input (or x)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ConversionError(f"--data {path} cannot be read: {exc}") from None
    found: dict[str, np.ndarray] = {}
    for spec in model.inputs:
        for key in (spec.name, spec.tensor):
            if key in arrays:
                found[spec.name] = arrays[key]
                break
    if not found and "x" in arrays and len(model.inputs) == 1:
        found[model.inputs[0].name] = arrays["x"]
    missing = [s.name for s in model.inputs if s.name not in found]
    if missing:
        raise ConversionError(f"--data {path} has arrays {sorted(arrays)}; the model's inputs are "
                              f"{[s.name for s in model.inputs]} (give each by name, or x for one input); "
                              f"missing {missing}")
    try:
        pool = named_inputs(model.inputs, found)
    except InputError as exc:
        raise ConversionError(f"--data {path}: {exc}") from None
    labels = arrays.get("y")
    labelled = labels is not None and labels.size > 0 and labels.dtype.kind in "iu"
    classes = int(labels.max()) + 1 if labelled else None
    return pool, classes


def generated_inputs(specs: list[TensorSpec], count: int, seed: int = 0) -> Arrays:
    """COUNT inputs per spec: float ones uniform in 0..1 (real values), quantised ones over
    their whole integer range (raw tensors), other integers 0 or 1."""
    rng = np.random.default_rng(seed)
    found: Arrays = {}
    for spec in specs:
        shape = (count, *spec.sample_shape)
        dtype = np.dtype(spec.dtype)
        if spec.quantized:
            info = np.iinfo(dtype)
            found[spec.name] = rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)
        elif dtype.kind in "iub":
            found[spec.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            found[spec.name] = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    return found


def render_pack_markdown(report: dict[str, Any]) -> str:
    model, golden, selftest = report["model"], report["golden"], report["selftest"]
    src = report["source"]
    ops = report["inspection"]["op_counts"]
    lines = [
        f"# {report['name']} {report['version']}: packed as it is",
        "",
        f"Created {report['created_at']} for target profile `{report['target']['profile']}`. The bundle "
        f"holds `{src['file']}` unchanged ({src['size_bytes']:,} bytes, SHA-256 `{src['sha256'][:16]}...`), "
        f"stored as **{src['stored_as']}**{' with sparse weights' if src['sparse'] else ''}; it was not "
        "converted, so no accuracy was measured.",
        "",
        f"Ops: {', '.join(f'{k} x{v}' for k, v in sorted(ops.items(), key=lambda kv: -kv[1]))}",
        "",
        "| tensor | role | dtype | shape |",
        "|---|---|---|---|",
        *[f"| {t['name']} | input | {t['dtype']} | {t['shape']} |" for t in model["inputs"]],
        *[f"| {t['name']} | output | {t['dtype']} | {t['shape']} |" for t in model["outputs"]],
        "",
        f"Golden self-test: {selftest.get('samples')} samples chosen from {golden['pool_samples']} "
        f"{'given in ' + str(golden['data']) if golden['inputs'] == 'data' else 'generated'} inputs; "
        f"class-score outputs: {', '.join(golden['class_score_outputs']) or 'none'}.",
    ]
    if report["warnings"]:
        lines += ["", "Warnings:", "", *[f"- {w}" for w in report["warnings"]]]
    return "\n".join(lines) + "\n"


def summary_text(result: PackResult) -> str:
    r = result.report
    src = r["source"]
    lines = [f"wrote {result.bundle_path} ({result.bundle_size:,} bytes) holding {src['file']} as it is "
             f"({src['stored_as']}, {src['size_bytes']:,} bytes); "
             f"report {', '.join(str(p) for p in result.report_paths.values())}",
             f"  golden self-test: {r['selftest'].get('samples')} samples from {r['golden']['inputs']} "
             "inputs"]
    lines += [f"  warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)


def report_for_json(result: PackResult) -> dict[str, Any]:
    return {**json.loads(encode_report(result.report)), "bundle_path": str(result.bundle_path),
            "bundle_size": result.bundle_size,
            "report_paths": {k: str(v) for k, v in result.report_paths.items()}}
