"""Real models through `edgefleet convert`, measured in one run and checked against the bars
of issue 8 ("Real models end to end").

    .venv/bin/python benchmarks/real_models_bench.py [--write-docs docs/benchmarks.md]

Cases: trained models other people published (MediaPipe 0.10.14's .tflite files, fetched
once into a cache outside the repository by tests/published_models.py), Keras
MobileNetV2 1.0/224 (weights=None: sizes and memory are real, accuracy is not) and the
digits CNN. Calibration and evaluation inputs are crops of the photos that ship inside
scikit-image, resized to each model's input and scaled to the range its MediaPipe graph
feeds it (0..1 or -1..1; the digits are their own data). Each conversion is the CLI's,
for the default variants of a CPU target (int8, float16, dynamic) with the default
accuracy gate, in a fresh process: wall time and peak RSS are that process's (the
kernel's accounting of the finished child, `ru_maxrss` of os.wait4). Every other figure
is the conversion's report.json. Exits 1 when a bar is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/published_models.py: the models' cache and the photos

from docs_sections import command_line, write_section  # noqa: E402  (benchmarks/, the script's own folder)

from tests.published_models import INPUT_RANGE, mediapipe_model, photo_batch  # noqa: E402

MEDIAPIPE = ("palm_detection_lite", "hand_landmark_lite", "pose_detection", "iris_landmark",
             "face_detection_short_range", "selfie_segmentation")
BARS = {"int8_ratio": 0.40, "dynamic_ratio": 0.40, "float16_ratio": 0.55, "min_snr_db": 20.0,
        "mnv2_int8_ratio": 0.29, "mnv2_peak_rss_bytes": 2.5e9, "bundle_factor": 1.15,
        "bundle_extra_bytes": 64 * 1024}
CALIB, EVAL = 64, 32
IRIS_RANGE = (0.0, 1.0)  # iris_landmark_cpu.pbtxt: zero_center false


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _input_shape(model: Path) -> tuple[str, tuple[int, ...]]:
    from edgefleet.runtime import TFLiteModel

    (spec,) = TFLiteModel(model.read_bytes()).inputs
    return spec.name, spec.sample_shape


def prepare(case: str, work: Path) -> tuple[Path, Path, Path]:
    """The model file and its calibration and evaluation .npz for CASE."""
    if case == "digits":
        from edgefleet.converter.digits import write_digits_files

        paths = write_digits_files(work / "digits", seed=0)
        return Path(paths["model"]), Path(paths["calib"]), Path(paths["eval"])
    if case == "mobilenet_v2_224":
        import keras

        model_path = work / "mobilenet_v2_224.keras"
        keras.applications.MobileNetV2(alpha=1.0, input_shape=(224, 224, 3), weights=None).save(model_path)
        name, shape, value_range = "x", (224, 224, 3), (-1.0, 1.0)
    else:
        model_path = mediapipe_model(case)
        name, shape = _input_shape(model_path)
        value_range = INPUT_RANGE.get(case, IRIS_RANGE)
    x = photo_batch(shape, CALIB + EVAL, value_range, seed=1)
    calib, evaluation = work / f"{case}-calib.npz", work / f"{case}-eval.npz"
    np.savez(calib, **{name: x[:CALIB]})
    np.savez(evaluation, **{name: x[CALIB:]})
    return model_path, calib, evaluation


def convert(case: str, model: Path, calib: Path, evaluation: Path, work: Path, key: Path) -> dict[str, Any]:
    """`edgefleet convert` in a fresh process: its report, exit code, wall time, peak RSS."""
    out = work / f"{case}.efb"
    cmd = [sys.executable, "-m", "edgefleet", "convert", str(model), "--calib", str(calib),
           "--eval", str(evaluation), "--out", str(out), "--key", str(key), "--name", case,
           "--target", "generic-x86_64", "--json", "--force"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=work)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    code = os.waitstatus_to_exitcode(status)
    report_path = work / f"{case}.report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    if report is None:
        raise RuntimeError(f"{case}: convert exited {code} without a report:\n{stderr.decode()[-3000:]}")
    return {"case": case, "exit_code": code, "wall_s": round(wall, 1),
            "peak_rss_bytes": usage.ru_maxrss * 1024, "report": report,
            "bundle_bytes": out.stat().st_size if out.exists() else None,
            "stdout_tail": stdout.decode()[-500:] if code else ""}


def _ratio_bar(mode: str, case: str) -> float:
    if case == "mobilenet_v2_224" and mode == "int8":
        return BARS["mnv2_int8_ratio"]
    return BARS[f"{mode}_ratio"]


def checks(r: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(check, measured, bar, passed) for one case."""
    report, case = r["report"], r["case"]
    rows = []
    variants = {v["name"]: v for v in report["variants"]}
    failed = {f["name"]: f["error"] for f in report.get("failed_variants", [])}
    for mode in ("int8", "dynamic", "float16"):
        if mode in failed:
            error = failed[mode]
            not_quantised = "not quantised" in error
            rows.append((f"{case} {mode}", f"failed: {error[:90]}", "runs, or reported not quantised",
                         not_quantised and mode != "int8"))
            continue
        v = variants[mode]
        bar = _ratio_bar(mode, case)
        rows.append((f"{case} {mode} size / float32", f"{v['size_ratio']:.3f}", f"<= {bar}",
                     v["size_ratio"] <= bar))
        if mode == "int8" and case in MEDIAPIPE:
            outs = (v["metrics"] or {}).get("outputs") or {}
            worst = min(outs.items(), key=lambda kv: kv[1].get("snr_db", 0.0)) if outs else None
            gate = v.get("gate") or {}
            ok = worst is not None and (worst[1]["snr_db"] >= BARS["min_snr_db"]
                                        or (gate.get("passed") is False and gate.get("output") == worst[0]))
            measured = f"{worst[0]}: {worst[1]['snr_db']:.1f} dB" if worst else "not measured"
            if gate.get("passed") is False:
                measured += f"; gate failed naming {gate.get('output')!r}"
            rows.append((f"{case} int8 lowest SNR", measured, ">= 20 dB, or the gate fails naming it", ok))
    if r["bundle_bytes"] is not None:
        chosen = variants.get(report["chosen"]) if report.get("chosen") else None
        model_bytes = chosen["size_bytes"] if chosen else None
        if model_bytes:
            limit = BARS["bundle_factor"] * model_bytes + BARS["bundle_extra_bytes"]
            rows.append((f"{case} bundle ({report['chosen']})", f"{r['bundle_bytes']:,} B",
                         f"<= 1.15 x {model_bytes:,} + 64 KiB", r["bundle_bytes"] <= limit))
    if case == "mobilenet_v2_224":
        rows.append(("mobilenet_v2_224 peak RSS", f"{r['peak_rss_bytes'] / 1e9:.2f} GB", "<= 2.5 GB",
                     r["peak_rss_bytes"] <= BARS["mnv2_peak_rss_bytes"]))
    return rows


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render(results: list[dict[str, Any]], command: str) -> str:
    import edgefleet

    first = results[0]["report"]
    lines = ["## Models other people published, through the converter (issue 8)", "",
             f"Produced by `{command}` on {platform.machine()} ({os.cpu_count()} cores), "
             f"{first['machine']['runtime']}, edgefleet {edgefleet.__version__}, "
             f"TensorFlow {first['converter'].get('tensorflow', '?')}. Every figure comes from that one run; "
             "the machine is shared and noisy: compare latencies within one table.", "",
             f"Inputs: {CALIB} calibration and {EVAL} evaluation crops of scikit-image's photos per model "
             "(the digits: their own data). Sizes are of the .tflite files; SNR and cosine are each output "
             "against the float32 model on the evaluation inputs; p50 is LiteRT's invoke with 1 thread. "
             "MobileNetV2 is untrained (`weights=None`): its float output is the same for every input, so "
             "its accuracy figures and gate verdicts say nothing (the converter flags that: \"constant "
             "reference\" below); its sizes, latencies and memory are real.", "",
             "### Against the bars of issue 8", "", "| check | measured | bar | |", "|---|---|---|---|"]
    all_rows = [row for r in results for row in checks(r)]
    lines += [f"| {c} | {m} | {b} | {'pass' if ok else 'MISSED'} |" for c, m, b, ok in all_rows]
    lines += ["", "### Per model and variant", ""]
    for r in results:
        report = r["report"]
        flt = report["float"]
        p50 = _f(flt["latency_p50_ms"].get("1"), ".3f")
        chosen = report.get("chosen") or "nothing (no variant passed the gate)"
        bundle = f" ({r['bundle_bytes']:,} B bundle)" if r["bundle_bytes"] else ""
        lines += [f"#### {r['case']}", "",
                  f"`convert` exit {r['exit_code']}, {r['wall_s']} s wall, peak RSS "
                  f"{r['peak_rss_bytes'] / 2**20:,.0f} MiB; float32 {flt['size_bytes']:,} B, p50 {p50} ms; "
                  f"bundled: {chosen}{bundle}", "",
                  "| variant | size ratio | p50 ms (1 thread) | SNR dB per output | cosine per output "
                  "| gate |", "|---|---:|---:|---|---|---|"]
        for v in report["variants"]:
            outs = (v["metrics"] or {}).get("outputs") or {}
            snr = ", ".join(f"{n} {o.get('snr_db', 0):.1f}" for n, o in outs.items())
            cos = ", ".join(f"{n} {o.get('cosine', 0):.4f}" for n, o in outs.items())
            gate = v.get("gate") or {}
            verdict = "-" if not gate else ("pass" if gate.get("passed") else f"fail ({gate.get('output')})")
            constant = [n for n, o in (gate.get("outputs") or {}).items() if o.get("constant_reference")]
            if constant:  # agreement with an output that never changes proves nothing
                verdict += f"; constant reference: {', '.join(constant)}"
            lines.append(f"| {v['name']} | {v['size_ratio']:.3f} | {_f(v['latency_p50_ms'].get('1'), '.3f')} "
                         f"| {snr} | {cos} | {verdict} |")
        for f in report.get("failed_variants", []):
            lines.append(f"| {f['name']} | failed: {f['error'][:120]} | | | | |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-docs", type=Path, help="Write the results as Markdown here.")
    parser.add_argument("--json", type=Path, help="Write every figure as JSON here.")
    parser.add_argument("--only", help="Comma-separated cases (default: all).")
    args = parser.parse_args()
    cases = [*MEDIAPIPE, "mobilenet_v2_224", "digits"]
    if args.only:
        cases = [c for c in cases if c in args.only.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="edgefleet-real-bench-") as tmp:
        work = Path(tmp)
        from edgefleet.protocol.signing import generate_keypair

        key, _ = generate_keypair(work / "keys")
        for case in cases:
            log(f"{case}: preparing data")
            model, calib, evaluation = prepare(case, work)
            log(f"{case}: converting")
            results.append(convert(case, model, calib, evaluation, work, key))
            log(f"{case}: {results[-1]['wall_s']} s, exit {results[-1]['exit_code']}")
    command = command_line(__file__, args.write_docs)
    text = render(results, command)
    print(text)
    if args.write_docs:
        write_section(args.write_docs, "real_models_bench", text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    missed = [c for r in results for c, _, _, ok in checks(r) if not ok]
    if missed:
        log(f"bars missed: {missed}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
