"""Converter benchmark: sizes, accuracy and latency of every variant, side by side,
measured in one run, checked against the bars of issue 3.

    .venv/bin/python benchmarks/converter_bench.py [--write-docs docs/benchmarks.md]

(a) a CNN trained on scikit-learn's digits (the wide one: 550 k parameters),
(b) Keras MobileNetV2 (alpha 0.35, 96x96x3, weights=None; size and latency only, calibrated
    on random inputs), with the default 1000-class head and with a 10-class head,
(c) knowledge distillation of (a) into a student of width 0.25, against the same student
    trained on labels alone, over three seeds.

Every figure comes from edgefleet's own code paths (edgefleet.converter.convert for (a) and (b),
edgefleet.converter.distillation for (c)); latency is LiteRT's invoke() on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import edgefleet.converter.tfenv  # noqa: F401  (TensorFlow's environment, before it loads)

# isort: split
import numpy as np
from docs_sections import command_line, write_section  # benchmarks/, the script's own folder

from edgefleet.protocol.signing import generate_keypair

BARS = {  # issue 3's acceptance bars
    "digits_int8_size": 0.26, "mnv2_int8_size": 0.38, "fp16_size": 0.52,
    "digits_int8_drop_pp": 0.5, "pruned_int8_drop_pp": 1.0, "pruned_bundle_size": 0.12,
    "student_params": 0.25, "student_vs_teacher_pp": 1.5,
}
VARIANTS = "int8,float16,dynamic,int16x8,pruned-int8"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def convert_case(model: Path, calib: Path, eval_path: Path | None, train: Path | None, out: Path,
                 key: Path, variants: str, pick: str | None) -> dict[str, Any]:
    from edgefleet.converter.build import convert

    result = convert(model, calib, out, key, eval_path=eval_path, train_path=train, variants=variants,
                     pick=pick, target="generic-x86_64", progress=lambda m: log(f"    {m}"), chart=False)
    return {"report": result.report, "bundle_bytes": result.bundle_size}


def digits_case(work: Path, key: Path) -> dict[str, Any]:
    from edgefleet.converter.digits import write_digits_files

    log("(a) digits CNN: training the wide CNN")
    t = time.perf_counter()
    paths = write_digits_files(work / "digits", filters=(32, 64), dense=512)
    train_s = time.perf_counter() - t
    case = convert_case(paths["model"], paths["calib"], paths["eval"], paths["train"],
                        work / "digits-pruned.efb", key, VARIANTS, pick="pruned-int8")
    case["train_seconds"] = round(train_s, 1)
    return case


def mobilenet_case(work: Path, key: Path, classes: int) -> dict[str, Any]:
    import keras

    log(f"(b) MobileNetV2 0.35 96x96, {classes} classes")
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                           classes=classes)
    path = work / f"mnv2-{classes}.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    calib = work / "mnv2-calib.npz"
    np.savez(calib, x=rng.random((64, 96, 96, 3), dtype=np.float32))
    # no labels, untrained weights: accuracy is meaningless here, sizes and latency are not
    return convert_case(path, calib, None, None, work / f"mnv2-{classes}.efb", key,
                        "int8,float16,dynamic,int16x8", pick="int8")


STUDENT_WIDTH = 0.45  # about a fifth of the teacher's parameters


def distill_case(seeds: tuple[int, ...] = (0, 1, 2)) -> dict[str, Any]:
    from edgefleet.converter.digits import digits_splits, train_digits_cnn, with_shifts
    from edgefleet.converter.distillation import DistillOptions, distill, scaled_student

    log(f"(c) distillation: teacher = wide digits CNN, student = width {STUDENT_WIDTH}")
    rows = []
    for seed in seeds:
        splits = digits_splits(seed)
        teacher = train_digits_cnn(*splits["train"], seed=seed, filters=(32, 64), dense=512)
        student = scaled_student(teacher, STUDENT_WIDTH)
        t = time.perf_counter()
        # student and labels-only baseline see the data the teacher was trained on
        train = with_shifts(*splits["train"])
        # the settings tests/converter/test_distill.py found steadiest on digits
        options = DistillOptions(temperature=2.0, alpha=0.5, epochs=10, learning_rate=3e-3, seed=seed)
        result = distill(teacher, student, *train, options, *splits["eval"])
        rows.append({"seed": seed, **{k: v for k, v in result.as_dict().items() if k != "history"},
                     "seconds_total": round(time.perf_counter() - t, 1)})
        log(f"    seed {seed}: teacher {rows[-1]['teacher_top1']:.4f} student {rows[-1]['student_top1']:.4f} "
            f"labels-only {rows[-1]['baseline_top1']:.4f}")
    return {"rows": rows}


def variant_rows(case: dict[str, Any]) -> list[dict[str, Any]]:
    r = case["report"]
    flt = r["float"]
    rows = [{"name": "float32", "size": flt["size_bytes"], "compressed": flt["compressed_bytes"],
             "ratio": 1.0, "top1": flt["metrics"].get("top1"), "drop": None,
             "lat1": flt["latency_p50_ms"].get("1"), "latall": flt["latency_p50_ms"].get("all"),
             "sparsity": flt["sparsity"]}]
    for v in r["variants"]:
        gate = v["gate"]
        rows.append({"name": v["name"], "size": v["size_bytes"], "compressed": v["compressed_bytes"],
                     "ratio": v["size_ratio"], "top1": v["metrics"].get("top1"),
                     "drop": None if gate is None or v["metrics"].get("top1") is None else gate["drop_pp"],
                     "lat1": v["latency_p50_ms"].get("1"), "latall": v["latency_p50_ms"].get("all"),
                     "sparsity": v["sparsity"]})
    return rows


def table(rows: list[dict[str, Any]], threads: int) -> list[str]:
    def f(v: Any, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    out = [f"| variant | file bytes | zlib bytes | size vs float32 | top-1 | drop pp | p50 ms 1 thread "
           f"| p50 ms {threads} threads | weight sparsity |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        out.append(f"| {row['name']} | {row['size']:,} | {row['compressed']:,} | {row['ratio']:.3f} "
                   f"| {f(row['top1'] and 100 * row['top1'], '.2f')} | {f(row['drop'], '+.2f')} "
                   f"| {f(row['lat1'], '.3f')} | {f(row['latall'], '.3f')} | {row['sparsity']:.3f} |")
    return out


def checks(results: dict[str, Any]) -> list[tuple[str, float, str, float, bool]]:
    d = {r["name"]: r for r in variant_rows(results["digits"])}
    m = {r["name"]: r for r in variant_rows(results["mnv2_10"])}
    m1000 = {r["name"]: r for r in variant_rows(results["mnv2_1000"])}
    float_size = d["float32"]["size"]
    out = [
        ("digits int8 file / float32 file", d["int8"]["ratio"], "<=", BARS["digits_int8_size"]),
        ("digits float16 file / float32 file", d["float16"]["ratio"], "<=", BARS["fp16_size"]),
        ("MobileNetV2 (10 classes) int8 / float32", m["int8"]["ratio"], "<=", BARS["mnv2_int8_size"]),
        ("MobileNetV2 (10 classes) float16 / float32", m["float16"]["ratio"], "<=", BARS["fp16_size"]),
        ("MobileNetV2 (1000 classes) int8 / float32", m1000["int8"]["ratio"], "<=", BARS["mnv2_int8_size"]),
        ("MobileNetV2 (1000 classes) float16 / float32", m1000["float16"]["ratio"], "<=", BARS["fp16_size"]),
        ("digits int8 top-1 drop (pp)", d["int8"]["drop"], "<=", BARS["digits_int8_drop_pp"]),
        ("digits 80% pruned + int8 top-1 drop (pp)", d["pruned-int8"]["drop"], "<=",
         BARS["pruned_int8_drop_pp"]),
        ("digits pruned-int8 bundle / float32 file", results["digits"]["bundle_bytes"] / float_size, "<=",
         BARS["pruned_bundle_size"]),
    ]
    rows = results["distill"]["rows"]
    ratio = max(r["param_ratio"] for r in rows)
    gap = max(100 * (r["teacher_top1"] - r["student_top1"]) for r in rows)
    # one held-out image is 0.28 pp: the comparison with labels-only is read on the mean over
    # seeds; the per-seed table below shows every seed, including any where it is behind
    vs_labels = float(np.mean([100 * (r["student_top1"] - r["baseline_top1"]) for r in rows]))
    out += [("student parameters / teacher parameters", ratio, "<=", BARS["student_params"]),
            ("teacher - distilled student top-1 (pp), worst seed", gap, "<=",
             BARS["student_vs_teacher_pp"]),
            (f"distilled - labels-only student top-1 (pp), mean of {len(rows)} seeds", vs_labels, ">=", 0.0)]
    return [(name, value, op, bar, value <= bar if op == "<=" else value >= bar)
            for name, value, op, bar in out]


def render(results: dict[str, Any], command: str) -> str:
    from edgefleet.converter.latency import all_cores

    threads = all_cores()
    r = results["digits"]["report"]
    failed_digits = r["failed_variants"]
    lines = [
        "## Converter techniques on our own models (issue 3)",
        "",
        f"Produced by `{command}` on {results['machine']} ({threads} cores), "
        f"{results['runtime']}, TensorFlow {r['converter']['tensorflow']}, Keras {r['converter']['keras']}. "
        "Every figure below comes from that one run; rerun the command to check them. The machine is "
        "shared and noisy: compare latencies within one table, not across runs.",
        "",
        "### Against the bars of issue 3",
        "",
        "| check | measured | bar | |",
        "|---|---:|---:|---|",
    ]
    for name, value, op, bar, ok in checks(results):
        lines.append(f"| {name} | {value:.3f} | {op} {bar} | {'pass' if ok else '**FAIL**'} |")
    params = r["source"]["parameters"]
    lines += [
        "",
        f"### (a) CNN on scikit-learn's digits ({params:,} parameters, held-out split of "
        f"{r['data']['eval_samples']} images)",
        "",
        *table(variant_rows(results["digits"]), threads),
        "",
        f"The bundle holding the 80 % pruned int8 model is {results['digits']['bundle_bytes']:,} bytes "
        f"(zip, deflate) against {variant_rows(results['digits'])[0]['size']:,} bytes of float32 .tflite. "
        f"Pruning: {r['pruning']['overall_sparsity']:.3f} overall kernel sparsity after "
        f"{r['pruning']['epochs']} fine-tuning epochs ({r['pruning']['framework']}). XNNPACK's sparse "
        "inference does not apply to int8 models (float only), so pruning pays here in compressed size, "
        "not in latency.",
        "",
        *[f"{f['name']} did not run: {f['error']}" for f in failed_digits],
    ]
    for classes in (10, 1000):
        case = results[f"mnv2_{classes}"]
        lines += [f"### (b) MobileNetV2 alpha 0.35, 96x96x3, {classes} classes "
                  f"({case['report']['source']['parameters']:,} parameters; untrained, so no accuracy)", "",
                  *table(variant_rows(case), threads), ""]
        for failed in case["report"]["failed_variants"]:
            lines += [f"{failed['name']} did not run: {failed['error']}", ""]
    lines += [f"### (c) Knowledge distillation (teacher: the CNN of (a); student: width {STUDENT_WIDTH})", "",
              "| seed | teacher params | student params | ratio | teacher top-1 | distilled student top-1 "
              "| same student, labels only |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["distill"]["rows"]:
        lines.append(f"| {row['seed']} | {row['teacher_params']:,} | {row['student_params']:,} "
                     f"| {row['param_ratio']:.3f} | {100 * row['teacher_top1']:.2f} "
                     f"| {100 * row['student_top1']:.2f} | {100 * row['baseline_top1']:.2f} |")
    opts = results["distill"]["rows"][0]["options"]
    behind = [r["seed"] for r in results["distill"]["rows"] if r["student_top1"] < r["baseline_top1"]]
    lines += ["", f"Options: temperature {opts['temperature']}, alpha {opts['alpha']}, "
              f"{opts['epochs']} epochs, batch {opts['batch_size']}, learning rate {opts['learning_rate']} "
              "(cosine decay); student and labels-only baseline train on the same data (the training "
              "split with one-pixel shifted copies, as the teacher did), from the same initial weights.",
              "",
              "Seeds where the distilled student is behind the labels-only one: "
              + (", ".join(map(str, behind)) if behind else "none")
              + ". On 360 held-out images one image is 0.28 pp, so single-seed differences of one or two "
              "images are noise; the check above uses the mean over seeds.", "",
              "### Latency", "",
              "Latency is the median of 50 `invoke()` calls after 5 warm-up calls, one sample, with "
              "LiteRT's default CPU path (XNNPACK). On this x86-64 machine with AVX2/AVX-512, int8 is "
              "not reliably faster than float32 for models this small; the tables say what was measured "
              "rather than what one might expect on an ARM board.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-docs", type=Path, help="write the Markdown report here")
    parser.add_argument("--json", type=Path, help="write every figure as JSON here")
    parser.add_argument("--only", help="run some cases, e.g. digits,distill (no docs then)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp:
        work = Path(tmp)
        private, _ = generate_keypair(work / "keys")
        results: dict[str, Any] = {"machine": f"{platform.machine()} {platform.processor()}".strip()}
        only = set(args.only.split(",")) if args.only else {"digits", "mnv2", "distill"}
        if "digits" in only:
            results["digits"] = digits_case(work, private)
        if "mnv2" in only:
            results["mnv2_10"] = mobilenet_case(work, private, 10)
            results["mnv2_1000"] = mobilenet_case(work, private, 1000)
        if "distill" in only:
            results["distill"] = distill_case()
        if args.only:
            print(json.dumps(results, indent=2, default=str)[:20000])
            return 0
        results["runtime"] = results["digits"]["report"]["machine"]["runtime"]
    command = command_line(__file__, args.write_docs)
    text = render(results, command)
    print(text)
    if args.write_docs:
        write_section(args.write_docs, "converter_bench", text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    failed = [c for c in checks(results) if not c[4]]
    for name, value, op, bar, _ in failed:
        log(f"FAIL: {name}: {value:.3f} not {op} {bar}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
