"""MobileNetV2 1.0/224 through `edgefleet convert`: int8 size, peak memory and wall time,
measured in one run and checked against the bars of issue 8 (item 5, "Robust int8").

    .venv/bin/python benchmarks/mobilenet_v2_bench.py [--json out.json]

The model is Keras' own ``keras.applications.MobileNetV2(alpha=1.0, input_shape=(224, 224, 3),
weights=None)`` (1000 classes, 3.5 M parameters, untrained: sizes and memory are real, accuracy
is not). Calibration and evaluation inputs are crops of scikit-image's sample photos
(astronaut, coffee, chelsea, rocket), resized to 224x224 and scaled to -1..1 as
``mobilenet_v2.preprocess_input`` does; ``--data random`` takes uniform noise in -1..1
instead, whose int8 input zero point is 0 (what made TensorFlow's QuantizationDebugger fail,
and with it the int8 variant, before the converter worked around it). The conversion is
the CLI's, for the default variants of a CPU target (int8, float16, dynamic), in a fresh
process: its peak RSS is that process's own, read twice, by the converter itself
(report.json ``peak_rss_bytes``) and by this script from the kernel's accounting of the
finished child (``ru_maxrss`` of ``os.wait4``). Exits 1 when a bar is missed. Needs
scikit-image (``pip install scikit-image``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BARS = {"int8_size_ratio": 0.29, "peak_rss_bytes": 2.5e9}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
SIZE = 224


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def photo_crops(count: int, seed: int) -> np.ndarray:
    """COUNT random crops (60-100 % of the shorter side, flipped at random) of the photos,
    SIZE x SIZE, float32 in -1..1."""
    from skimage import data
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    photos = [getattr(data, name)() for name in PHOTOS]
    out = np.empty((count, SIZE, SIZE, 3), np.float32)
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(min(h, w) * rng.uniform(0.6, 1.0))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = photo[top:top + side, left:left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = resize(crop, (SIZE, SIZE), anti_aliasing=True, preserve_range=True) / 127.5 - 1.0
    return out


def random_inputs(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (count, SIZE, SIZE, 3)).astype(np.float32)


def make_inputs(work: Path, calib_samples: int, eval_samples: int, data: str) -> dict[str, Path]:
    """The model and its data, written by a child process so that this one never loads TensorFlow."""
    code = f"""
import edgefleet.converter.tfenv  # TensorFlow's environment, before it loads
import keras
keras.utils.set_random_seed(0)
model = keras.applications.MobileNetV2(alpha=1.0, input_shape=({SIZE}, {SIZE}, 3), weights=None)
model.save({str(work / 'mnv2.keras')!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, stderr=subprocess.DEVNULL)
    inputs = photo_crops if data == "photos" else random_inputs
    np.savez(work / "calib.npz", x=inputs(calib_samples, seed=1))
    np.savez(work / "eval.npz", x=inputs(eval_samples, seed=2))
    return {"model": work / "mnv2.keras", "calib": work / "calib.npz", "eval": work / "eval.npz"}


def run_convert(paths: dict[str, Path], work: Path, extra: list[str]) -> dict[str, Any]:
    """`edgefleet convert --json` in a fresh process: its report, wall time and peak RSS."""
    from edgefleet.protocol.signing import generate_keypair

    private, _ = generate_keypair(work / "keys")
    cmd = [sys.executable, "-m", "edgefleet", "convert", str(paths["model"]), "--calib", str(paths["calib"]),
           "--eval", str(paths["eval"]), "--out", str(work / "mnv2.efb"), "--key", str(private),
           "--target", "generic-x86_64", "--json", *extra]
    log("  " + " ".join(cmd[1:]))
    out_path, err_path = work / "convert.out", work / "convert.err"
    started = time.perf_counter()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        child = subprocess.Popen(cmd, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"edgefleet convert failed (exit {code}):\n{err_path.read_text()[-3000:]}")
    return {"report": json.loads(out_path.read_text()), "process_wall_seconds": round(wall, 1),
            "process_peak_rss_bytes": usage.ru_maxrss * 1024}  # Linux reports KiB


def figures(run: dict[str, Any]) -> dict[str, Any]:
    r = run["report"]
    variants = {v["name"]: v for v in r["variants"]}
    int8 = variants.get("int8")
    return {
        "float32_bytes": r["float"]["size_bytes"],
        "variants": {name: {"size_bytes": v["size_bytes"], "size_ratio": v["size_ratio"],
                            "worst_layers": len(v["worst_layers"]), "notes": v["notes"]}
                     for name, v in variants.items()},
        "failed_variants": r["failed_variants"],
        "int8_size_ratio": None if int8 is None else int8["size_bytes"] / r["float"]["size_bytes"],
        "int8_ranked_layers": None if int8 is None else len(int8["worst_layers"]),
        # a converter older than these figures has none: the process's own still count
        "peak_rss_bytes": r.get("peak_rss_bytes", 0),
        "peak_rss_method": r.get("peak_rss", {}).get("method", "not measured"),
        "peak_rss_by_step_bytes": r.get("peak_rss", {}).get("by_step_bytes", {}),
        "process_peak_rss_bytes": run["process_peak_rss_bytes"],
        "convert_wall_seconds": r.get("wall_seconds", math.nan),
        "process_wall_seconds": run["process_wall_seconds"],
        "timings_seconds": r["timings_seconds"], "warnings": r["warnings"],
    }


def checks(f: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(what, measured against the bar, passed) for each bar."""
    ratio, peak = f["int8_size_ratio"], max(f["peak_rss_bytes"], f["process_peak_rss_bytes"])
    return [
        ("int8 variant built", "yes" if ratio is not None else f"no: {f['failed_variants']}",
         ratio is not None),
        ("int8 file / float32 file", "n/a" if ratio is None else f"{ratio:.4f} <= {BARS['int8_size_ratio']}",
         ratio is not None and ratio <= BARS["int8_size_ratio"]),
        ("peak RSS of the conversion process", f"{peak / 1e9:.2f} GB <= {BARS['peak_rss_bytes'] / 1e9} GB",
         peak <= BARS["peak_rss_bytes"]),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calib-samples", type=int, default=200)  # convert's default count
    parser.add_argument("--eval-samples", type=int, default=100)
    parser.add_argument("--data", choices=["photos", "random"], default="photos")
    parser.add_argument("--json", type=Path, help="write every figure as JSON here")
    parser.add_argument("--no-latency", action="store_true", help="pass --no-latency to convert")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgefleet-mnv2-") as tmp:
        work = Path(tmp)
        what = f"crops of {', '.join(PHOTOS)}" if args.data == "photos" else "random inputs in -1..1"
        log(f"MobileNetV2 1.0/224 (weights=None); {args.calib_samples} calibration and "
            f"{args.eval_samples} evaluation samples: {what}")
        paths = make_inputs(work, args.calib_samples, args.eval_samples, args.data)
        run = run_convert(paths, work, ["--no-latency"] if args.no_latency else [])
    f = figures(run)
    print(f"float32 {f['float32_bytes']:,} bytes")
    for name, v in f["variants"].items():
        print(f"{name:<8} {v['size_bytes']:>12,} bytes  {v['size_ratio']:.4f}x float32  "
              f"{v['worst_layers']} ranked layers")
    for failed in f["failed_variants"]:
        print(f"{failed['name']} FAILED: {failed['error']}")
    print(f"peak RSS {f['peak_rss_bytes'] / 1e9:.2f} GB in the converter ({f['peak_rss_method']}), "
          f"{f['process_peak_rss_bytes'] / 1e9:.2f} GB for the whole process (ru_maxrss)")
    steps = f["peak_rss_by_step_bytes"].items()
    print("peak RSS by step: " + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in steps))
    print(f"wall time {f['convert_wall_seconds']:.0f} s in convert(), {f['process_wall_seconds']:.0f} s "
          "for the process; steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in f["timings_seconds"].items()))
    for warning in f["warnings"]:
        print(f"warning: {warning}")
    if args.json:
        args.json.write_text(json.dumps(f, indent=2))
    results = checks(f)
    for what, measured, ok in results:
        print(f"{'pass' if ok else 'FAIL'}: {what}: {measured}")
    return 0 if all(ok for _what, _measured, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
