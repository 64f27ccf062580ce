"""What a conversion hands over: the bundle's manifest, the report's figures (report.json),
and the files on disk (the signed bundle, and report.json, .md and .png beside it).

The second half of :class:`converter.build._Conversion`, which inherits :class:`Artifacts`;
the paths are checked (:func:`check_out_path`) before any work starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import edgefleet
from edgefleet.compat import DEFAULT_REQUIRES, MIN_RUNTIME_VERSIONS
from edgefleet.converter.errors import ConversionError
from edgefleet.converter.memory import StepPeaks
from edgefleet.converter.quantization.float_islands import with_float_islands
from edgefleet.converter.targets.profile import Target
from edgefleet.converter.variants import VariantResult
from edgefleet.protocol.bundle import (
    GOLDEN,
    MODEL,
    REPORT_JSON,
    REPORT_MD,
    read_manifest_unverified,
    write_bundle,
)
from edgefleet.protocol.signing import Signer
from edgefleet.runtime import TFLiteModel

if TYPE_CHECKING:
    from edgefleet.converter.build import ConvertOptions
    from edgefleet.converter.evaluation import Reference

# per-output figures the manifest carries (report.json has them all)
_MANIFEST_FIGURES = ("snr_db", "cosine", "max_abs_error", "agreement", "top1", "class_scores")


@dataclass(frozen=True)
class ConversionResult:
    bundle_path: Path
    bundle_size: int  # bytes of the bundle file
    manifest: dict[str, Any]  # as written, with `format` and `files` filled in
    report: dict[str, Any]
    report_paths: dict[str, Path]  # json, md, png next to the bundle


def check_out_path(model_path: Path, out_path: Path, force: bool = False) -> None:
    """Never overwrite the input or a file that is not a bundle, nor a bundle without FORCE;
    fail before the work."""
    if out_path.exists():
        if model_path.exists() and out_path.resolve() == model_path.resolve():
            raise ConversionError(f"--out {out_path} is the model being converted; choose another name")
        if not zipfile.is_zipfile(out_path):
            raise ConversionError(f"--out {out_path} exists and is not a bundle; it is not overwritten")
        if not force:
            raise ConversionError(f"--out {out_path} exists (a bundle); give --force to replace it")
    for extra in (out_path, *report_paths(out_path).values()):
        if extra.is_dir():
            raise ConversionError(f"{extra} is a directory; choose another --out")
    parent = out_path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConversionError(f"cannot create the folder of --out {out_path}: {exc}") from None
    if not os.access(parent, os.W_OK):
        raise ConversionError(f"cannot write into {parent}; choose another --out")


def report_paths(out_path: Path) -> dict[str, Path]:
    """The report files beside the bundle OUT_PATH: json, md, png."""
    stem = out_path.with_suffix("")
    return {"json": Path(f"{stem}.report.json"), "md": Path(f"{stem}.report.md"),
            "png": Path(f"{stem}.report.png")}


class Artifacts:
    """Manifest, report and files of one conversion, from the attributes below (set by
    :class:`converter.build._Conversion`, which inherits this class)."""

    name: str
    opts: ConvertOptions
    target: Target
    model_path: Path
    calib_path: Path
    out_path: Path
    key: Signer
    say: Callable[[str], None]
    timings: dict[str, float]
    memory: StepPeaks
    warnings: list[str]
    failed: list[dict[str, str]]

    range_note: str

    def _warn(self, warnings: list[str]) -> None:
        """Add WARNINGS (once each) and say them now: they come before the step they concern."""
        for warning in warnings:
            if warning not in self.warnings:
                self.warnings.append(warning)
                self.say(f"warning: {warning}")

    def _choose(self, results: list[VariantResult], source: Any, reference: Reference, float_measured: Any,
                pruning: dict | None) -> tuple[VariantResult, str]:
        """The bundle's variant; when the gate fails, the report is written before the error."""
        from edgefleet.converter.quantization.gate import GateError
        from edgefleet.converter.variants import choose

        try:
            return choose(results, self.opts.pick, self.target.allowed_modes, self.target.needs_edgetpu,
                          float_measured.latency_p50_ms.get("1"), self.opts.prefer)
        except GateError as exc:
            report = self._report(source, None, str(exc), results, float_measured, reference, pruning,
                                  None, None)
            paths = self._write_report(report)
            raise GateError(exc.result, f"{exc}\nreport: {paths['json']}, {paths['md']} (no bundle "
                                        "written)") from None

    def _manifest(self, chosen: VariantResult, model: TFLiteModel, selftest: dict[str, Any], float_size: int,
                  reference: Reference) -> dict[str, Any]:
        from edgefleet.converter.tfutil import framework_versions

        m = chosen.measured.metrics
        return {
            "name": self.name,
            "version": str(self.opts.version),
            # "+00:00" rather than "Z": datetime.fromisoformat reads it on Python 3.10 too
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "target": {"profile": self.target.name, "accelerator": self.target.accelerator},
            "runtime": {"delegate": self.target.delegate, "delegate_library": self.target.library,
                        "delegate_options": dict(self.target.options),
                        "min_versions": dict(MIN_RUNTIME_VERSIONS)},
            "requires": copy.deepcopy(DEFAULT_REQUIRES),  # checked by devices before they download it
            "model": {"file": MODEL, "quantization": chosen.spec.mode, "variant": chosen.spec.name,
                      "size_bytes": len(chosen.model_bytes),
                      "inputs": [s.as_dict() for s in model.inputs],
                      "outputs": [s.as_dict() for s in model.outputs]},
            "selftest": selftest,
            "metrics": {"float_top1": reference.figures.get("top1"), "quantized_top1": m.get("top1"),
                        "agreement_with_float": m.get("agreement"),
                        "eval_samples": 0 if reference.evaluation is None else reference.evaluation.count,
                        "float_size_bytes": float_size, "model_size_bytes": len(chosen.model_bytes),
                        "outputs": {name: {k: f[k] for k in _MANIFEST_FIGURES if k in f}
                                    for name, f in (m.get("outputs") or {}).items()}},
            "converter": {"edgefleet": edgefleet.__version__, **framework_versions()},
        }

    def _report(self, source: Any, chosen: VariantResult | None, recommendation: str,
                results: list[VariantResult], float_measured: Any, reference: Reference,
                pruning: dict | None, model: TFLiteModel | None,
                manifest: dict[str, Any] | None) -> dict[str, Any]:
        """report.json's content; CHOSEN, MODEL and MANIFEST are None when the gate failed."""
        calib, evaluation = reference.calib, reference.evaluation
        runtime = model or reference.model
        return {
            "schema": "edgefleet.report/1",
            "name": self.name, "version": str(self.opts.version),
            "created_at": manifest["created_at"] if manifest else datetime.now(timezone.utc).isoformat(
                timespec="seconds"),
            "target": {"profile": self.target.name, "accelerator": self.target.accelerator,
                       "allowed_modes": self.target.allowed_modes},
            "source": {"file": self.model_path.name, "kind": source.kind,
                       "sha256": file_sha256(self.model_path),
                       "parameters": int(source.keras_model.count_params()) if source.keras_model is not None
                       else None},
            "data": {"calibration": self.calib_path.name, "calibration_samples_available": calib.count,
                     "calibration_samples_used": min(self.opts.calibration_samples, calib.count),
                     "eval_samples": 0 if evaluation is None else evaluation.count,
                     "labels": evaluation is not None and evaluation.labels is not None,
                     "inputs": sorted(calib.inputs), "stored_dtypes": {"calibration": calib.dtypes,
                     "evaluation": evaluation.dtypes if evaluation is not None else None},
                     "input_range_check": self.range_note},
            "float": {"size_bytes": float_measured.size_bytes,
                      "compressed_bytes": float_measured.compressed_bytes,
                      "metrics": reference.figures, "latency_p50_ms": float_measured.latency_p50_ms,
                      "sparsity": round(float_measured.sparsity, 4), "ops": float_measured.ops},
            "outputs": {"class_scores": reference.class_outputs, "labelled": reference.labelled,
                        "task": reference.task},
            "variants": [with_float_islands(r.summary(float_measured.size_bytes), r.spec.mode, r.model_bytes)
                         for r in results],
            "failed_variants": self.failed,
            "chosen": chosen.spec.name if chosen else None, "recommendation": recommendation,
            "chosen_edgetpu_ops": (chosen.edgetpu or {}).get("ops") if chosen and self.target.needs_edgetpu
            else None,
            "gate": {"max_accuracy_drop_pp": self.max_drop, "min_snr_db": self.opts.min_snr_db,
                     "on": self.max_drop is not None, "passed": chosen is not None},
            "max_accuracy_drop_pp": self.max_drop,
            "prefer": self.opts.prefer,
            "pruning": pruning,
            "model": manifest["model"] if manifest else None,
            "selftest": {**manifest["selftest"], "source": "calibration" if evaluation is None else "eval"}
            if manifest else None,
            "machine": {"cpu": platform.processor() or platform.machine(),
                        "runtime": f"{runtime.runtime.name} {runtime.runtime.version}"},
            "converter": manifest["converter"] if manifest else {"edgefleet": edgefleet.__version__},
            "timings_seconds": self.timings,
            **self.memory.figures(),
            "warnings": self.warnings,
        }

    def _write_report(self, report: dict[str, Any]) -> dict[str, Path]:
        """report.json and report.md alone (a failed gate: no bundle)."""
        from edgefleet.converter.report import render_markdown

        paths = report_paths(self.out_path)
        try:
            paths["json"].write_bytes(encode_report(report))
            paths["md"].write_bytes(render_markdown(report).encode())
        except OSError as exc:
            raise ConversionError(f"cannot write the report: {exc}") from None
        return {k: paths[k] for k in ("json", "md")}

    def _write(self, manifest: dict[str, Any], report: dict[str, Any], chosen: VariantResult,
               golden: bytes) -> ConversionResult:
        from edgefleet.converter.report import render_chart, render_markdown

        report_json = encode_report(report)
        report_md = render_markdown(report).encode()
        files = {MODEL: chosen.model_bytes, GOLDEN: golden, REPORT_JSON: report_json, REPORT_MD: report_md}
        self.say(f"writing signed bundle {self.out_path}")
        paths = report_paths(self.out_path)
        if not self.opts.chart:
            del paths["png"]
        try:
            data = write_bundle(self.out_path, manifest, files, self.key)
            paths["json"].write_bytes(report_json)
            paths["md"].write_bytes(report_md)
            if "png" in paths:
                render_chart(report, paths["png"])
        except OSError as exc:
            for path in (self.out_path, *paths.values()):
                if path.is_file():
                    path.unlink()
            raise ConversionError(f"cannot write the bundle or its report: {exc}") from None
        return ConversionResult(self.out_path, len(data), read_manifest_unverified(data), report, paths)


def encode_report(report: dict[str, Any]) -> bytes:
    """report.json's bytes: sorted keys, numpy numbers as JSON numbers, NaN as null."""
    return json.dumps(_finite(report), indent=2, sort_keys=True, default=_json_default,
                      allow_nan=False).encode() + b"\n"


def _finite(value: Any) -> Any:
    """NaN and infinity are not JSON: they become null (the figure could not be measured)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON: {type(value).__name__}")


def file_sha256(path: Path) -> str | None:
    if path.is_dir():
        return None  # a SavedModel folder
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
