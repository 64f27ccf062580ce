"""`convert`: model file + calibration data -> quantised, evaluated, signed bundle.

Steps: load the model and data, quantise (one function per mode), convert a float32
copy for the size comparison, measure accuracy with the device runtime, pick a golden
self-test set, write report.json and report.md, and sign everything into a bundle
(format: :mod:`agent.bundle`).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import agent
from agent.bundle import (
    GOLDEN,
    MODEL,
    REPORT_JSON,
    REPORT_MD,
    read_manifest_unverified,
    write_bundle,
)
from agent.runtime import TensorSpec, TFLiteModel
from agent.signing import SignatureError, SigningKey
from converter.datasets import load_npz
from converter.errors import ConversionError
from converter.evaluate import argmax_agreement, keras_outputs, tflite_outputs, top1_accuracy
from converter.int8 import (
    check_model_input,
    convert_float,
    convert_int8,
    framework_versions,
    load_keras_model,
)

# mode -> function(model, calibration inputs, calibration sample count) -> TFLite bytes
Quantizer = Callable[[Any, np.ndarray, int], bytes]
_QUANTIZERS: dict[str, Quantizer] = {"int8": convert_int8}
MODES = tuple(_QUANTIZERS)
PLANNED_MODES = ("float16", "dynamic", "int16x8")

# The oldest runtimes a bundle is known to load in (the agent compares installed versions).
MIN_RUNTIME_VERSIONS = {"ai-edge-litert": "1.2.0", "tflite-runtime": "2.14.0"}
# Self-test tolerance in output quantisation steps: another correct kernel (another runtime
# version, an accelerator) may round a step differently; a wrong model is off by far more.
SELFTEST_TOLERANCE_STEPS = 2
# Golden samples need this lead of the top class over the next (in output steps): kernels
# measured here differ by up to 3 steps on single outputs, so a correct board keeps argmax.
GOLDEN_MIN_MARGIN_STEPS = 16
GOLDEN_POOL = 512  # candidates the golden set is chosen from
ACCURACY_DROP_WARNING_PP = 1.0


@dataclass(frozen=True)
class ConversionResult:
    bundle_path: Path
    bundle_size: int  # bytes of the bundle file
    manifest: dict[str, Any]  # as written, with `format` and `files` filled in
    report: dict[str, Any]


def check_mode(mode: str) -> None:
    if mode in MODES:
        return
    if mode in PLANNED_MODES:
        raise ConversionError(
            f"quantisation mode {mode!r} is not available yet; supported today: "
            f"{', '.join(MODES)} ({', '.join(PLANNED_MODES)} arrive in a later release)"
        )
    raise ConversionError(f"unknown quantisation mode {mode!r}; supported: {', '.join(MODES)}")


def convert(
    model_path: str | Path,
    calib_path: str | Path,
    out_path: str | Path,
    key_path: str | Path,
    *,
    eval_path: str | Path | None = None,
    name: str | None = None,
    version: str = "1",
    mode: str = "int8",
    calibration_samples: int = 200,
    golden_samples: int = 16,
    target: str = "generic",
    progress: Callable[[str], None] | None = None,
) -> ConversionResult:
    """Convert MODEL_PATH with CALIB_PATH data into a signed bundle at OUT_PATH.

    EVAL_PATH (an .npz with x and ideally y) adds accuracy figures; without labels only
    agreement with the float model is measured. PROGRESS receives one line per step.
    """
    say = progress or (lambda _message: None)
    timings: dict[str, float] = {}
    warnings: list[str] = []

    # Cheap checks first: a typo should not cost a conversion.
    check_mode(mode)
    if calibration_samples < 1 or golden_samples < 1:
        raise ConversionError("calibration_samples and golden_samples must be at least 1")
    model_path, out_path = Path(model_path), Path(out_path)
    name = model_path.stem if name is None else name
    if not name.strip():
        raise ConversionError("the bundle name is empty")
    if out_path.is_dir():
        raise ConversionError(f"output {out_path} is a directory; give a file name such as x.efb")
    try:
        key = SigningKey.load(key_path)
    except SignatureError as exc:
        raise ConversionError(str(exc)) from None

    started = time.perf_counter()
    say(f"loading model {model_path}")
    model = load_keras_model(model_path)
    say(f"loading calibration data {calib_path}")
    calib_x, _ = load_npz(calib_path)  # labels, if any, are not needed to calibrate
    check_model_input(model, calib_x, f"calibration ({calib_path})")
    eval_x = eval_y = None
    if eval_path is not None:
        say(f"loading evaluation data {eval_path}")
        eval_x, eval_y = load_npz(eval_path)
        check_model_input(model, eval_x, f"evaluation ({eval_path})")
    timings["load"] = time.perf_counter() - started

    used = min(calibration_samples, len(calib_x))
    say(f"quantising to {mode} ({used} calibration samples)")
    started = time.perf_counter()
    model_bytes = _QUANTIZERS[mode](model, calib_x, calibration_samples)
    timings["quantize"] = time.perf_counter() - started
    if used < 100:
        warnings.append(f"only {used} calibration samples; a few hundred give steadier ranges")

    say("converting a float32 copy for the size comparison")
    started = time.perf_counter()
    float_size = len(convert_float(model))
    timings["float_convert"] = time.perf_counter() - started

    tflite = TFLiteModel(model_bytes)  # the device's runtime, CPU kernels
    metrics: dict[str, Any] = {
        "float_top1": None, "quantized_top1": None, "agreement_with_float": None,
        "eval_samples": 0, "float_size_bytes": float_size, "model_size_bytes": len(model_bytes),
    }
    if eval_x is not None:
        say(f"evaluating float and {mode} models on {len(eval_x)} samples")
        started = time.perf_counter()
        float_out = keras_outputs(model, eval_x)
        quant_out = tflite_outputs(tflite, eval_x)
        metrics["eval_samples"] = len(eval_x)
        metrics["agreement_with_float"] = argmax_agreement(float_out, quant_out)
        if eval_y is not None:
            metrics["float_top1"] = top1_accuracy(float_out, eval_y)
            metrics["quantized_top1"] = top1_accuracy(quant_out, eval_y)
            drop_pp = 100 * (metrics["float_top1"] - metrics["quantized_top1"])
            if drop_pp > ACCURACY_DROP_WARNING_PP:
                warnings.append(f"{mode} top-1 is {drop_pp:.1f} points below float")
        else:
            warnings.append(f"{eval_path} has no labels (y): top-1 accuracy was not measured")
        timings["evaluate"] = time.perf_counter() - started
    else:
        warnings.append("no evaluation data given: accuracy was not measured")

    say(f"choosing {golden_samples} golden self-test samples")
    started = time.perf_counter()
    golden_source = "eval" if eval_x is not None else "calibration"
    golden_x = _pick_golden(tflite, eval_x if eval_x is not None else calib_x, golden_samples)
    reference = tflite_outputs(tflite, golden_x)
    golden = {"inputs": golden_x, "reference_outputs": reference,
              "float_outputs": keras_outputs(model, golden_x)}
    tolerance = selftest_tolerance(tflite.outputs[0])
    timings["golden"] = time.perf_counter() - started

    versions = framework_versions()
    manifest = {
        "name": name,
        "version": str(version),
        # "+00:00" rather than "Z": datetime.fromisoformat reads it on Python 3.10 too
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target": {"profile": target},
        "runtime": {"delegate": "cpu", "min_versions": dict(MIN_RUNTIME_VERSIONS)},
        "model": {
            "file": MODEL, "quantization": mode, "size_bytes": len(model_bytes),
            "inputs": [spec.as_dict() for spec in tflite.inputs],
            "outputs": [spec.as_dict() for spec in tflite.outputs],
        },
        "selftest": {"file": GOLDEN, "samples": len(golden_x), "min_top1_agreement": 1.0,
                     "max_mean_abs_error": tolerance},
        "metrics": metrics,
        "converter": {"edgefleet": agent.__version__, **versions},
    }
    report = {
        "name": name, "version": str(version), "created_at": manifest["created_at"],
        "mode": mode, "target": target,
        "source": {
            "model": model_path.name, "model_sha256": _sha256_file(model_path),
            "model_parameters": int(model.count_params()),
            "calibration": Path(calib_path).name, "calibration_samples_available": len(calib_x),
            "calibration_samples_used": used,
            "eval": Path(eval_path).name if eval_path is not None else None,
            "eval_labelled": eval_y is not None,
        },
        "model": manifest["model"],
        "metrics": {**metrics, **_derived(metrics)},
        "selftest": {**manifest["selftest"], "source": golden_source},
        "reference_runtime": {"name": tflite.runtime.name, "version": tflite.runtime.version},
        "converter": manifest["converter"],
        "timings_seconds": {k: round(v, 3) for k, v in timings.items()},
        "warnings": warnings,
    }
    files = {
        MODEL: model_bytes,
        GOLDEN: _npz_bytes(golden),
        REPORT_JSON: json.dumps(report, indent=2, sort_keys=True).encode() + b"\n",
        REPORT_MD: render_report_md(report).encode(),
    }
    say(f"writing signed bundle {out_path}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data = write_bundle(out_path, manifest, files, key)
    return ConversionResult(out_path, len(data), read_manifest_unverified(data), report)


def selftest_tolerance(output: TensorSpec) -> float:
    """Largest mean absolute output error a correct model may show on another kernel."""
    if output.quantized:
        return SELFTEST_TOLERANCE_STEPS * output.scale
    return 1e-3  # float outputs (later modes): revisit per mode when they arrive


def _pick_golden(model: TFLiteModel, x: np.ndarray, n: int) -> np.ndarray:
    """N inputs from X that make a sharp self-test for the quantised model.

    Every pick has a clear lead of its top class (GOLDEN_MIN_MARGIN_STEPS), so a kernel
    that rounds a step differently cannot flip the argmax of a correct model and fail
    `min_top1_agreement = 1.0`. Within that, half the picks are the least confident inputs:
    confident inputs give near 0/1 outputs that even a different model reproduces, less
    confident ones expose wrong weights or arithmetic. The other half are random (typical
    inputs). Falls back to the largest margins when too few inputs have a clear lead.
    """
    rng = np.random.default_rng(0)
    pool = x[np.sort(rng.permutation(len(x))[:GOLDEN_POOL])]
    outputs = tflite_outputs(model, pool)
    if outputs.ndim != 2 or outputs.shape[1] < 2:
        return pool[:n]  # not a classifier's scores: any inputs serve
    top2 = np.sort(outputs, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    step = model.outputs[0].scale if model.outputs[0].quantized else 0.0
    clear = np.flatnonzero(margin >= GOLDEN_MIN_MARGIN_STEPS * step)
    if len(clear) <= n:
        return pool[np.sort(np.argsort(-margin, kind="stable")[:n])]
    by_margin = clear[np.argsort(margin[clear], kind="stable")]
    hardest = by_margin[: n // 2]
    rest = rng.permutation(by_margin[n // 2 :])[: n - len(hardest)]
    return pool[np.sort(np.concatenate([hardest, rest]))]


def _derived(metrics: dict[str, Any]) -> dict[str, Any]:
    float_top1, quant_top1 = metrics["float_top1"], metrics["quantized_top1"]
    return {
        "top1_change_pp": None if float_top1 is None else 100 * (quant_top1 - float_top1),
        "size_ratio": metrics["float_size_bytes"] / metrics["model_size_bytes"],
    }


def render_report_md(report: dict[str, Any]) -> str:
    """The report as a short Markdown page for people (report.json is for programs)."""
    m, mode = report["metrics"], report["mode"]

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f} %"

    def kib(value: int) -> str:
        return f"{value / 1024:.1f} KiB"

    change = "n/a" if m["top1_change_pp"] is None else f"{m['top1_change_pp']:+.2f} points"
    lines = [
        f"# {report['name']} {report['version']}: {mode} conversion report",
        "",
        f"Created {report['created_at']} for target profile `{report['target']}`.",
        "",
        f"| | float32 | {mode} | change |",
        "|---|---|---|---|",
        f"| top-1 ({m['eval_samples']} eval samples) | {pct(m['float_top1'])} "
        f"| {pct(m['quantized_top1'])} | {change} |",
        f"| model size | {kib(m['float_size_bytes'])} | {kib(m['model_size_bytes'])} "
        f"| {m['size_ratio']:.1f}x smaller |",
        "",
        f"- Agreement with the float model (same top class): {pct(m['agreement_with_float'])}",
    ]
    src, st = report["source"], report["selftest"]
    lines += [
        f"- Source: `{src['model']}` ({src['model_parameters']} parameters), sha256 "
        f"`{src['model_sha256'][:16]}...`",
        f"- Calibration: {src['calibration_samples_used']} of "
        f"{src['calibration_samples_available']} samples from `{src['calibration']}`",
        f"- Self-test: {st['samples']} golden samples from the {st['source']} data; passes when "
        f"the top class always matches and the mean absolute error is at most "
        f"{st['max_mean_abs_error']:.6g}",
        f"- Measured with {report['reference_runtime']['name']} "
        f"{report['reference_runtime']['version']}; converted with TensorFlow "
        f"{report['converter']['tensorflow']}, Keras {report['converter']['keras']}",
    ]
    for tensor in report["model"]["inputs"] + report["model"]["outputs"]:
        lines.append(
            f"- Tensor `{tensor['name']}`: {tensor['dtype']} {tensor['shape']}, scale "
            f"{tensor['scale']:.6g}, zero point {tensor['zero_point']}"
        )
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    return buf.getvalue()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
