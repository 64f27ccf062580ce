"""`edgefleet convert` and `edgefleet distill`: the converter's commands (workstation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgefleet.cli.common import bundle_options, emit_json, need, unwritable


@click.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option("--calib", "calib", required=True, type=click.Path(exists=True, path_type=Path),
              help="Calibration inputs: .npz with one array per input name (x for a one-input model), "
                   ".npy, or a folder of images (with --preprocess).")
@click.option("--eval", "eval_path", type=click.Path(exists=True, path_type=Path),
              help="Evaluation data, as --calib, with labels y (top-1/top-k) or without (agreement with "
                   "the float model); every output gets SNR, cosine and max error. Turns the gate on.")
@click.option("--train", "train_path", type=click.Path(exists=True, path_type=Path),
              help="Training data (.npz with x, y) for the fine-tuning of pruned variants.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Bundle to write (.efb); the report goes beside it (.report.json/.md/.png).")
@bundle_options
@click.option("--mode", help="One variant: float32, dynamic, float16 (fp16), int8, int16x8, or "
                             "pruned-<mode> (default: the target's).")
@click.option("--variants", help="Several, compared side by side, e.g. int8,fp16,dynamic,pruned-int8; "
                                 "the recommended one goes in the bundle.")
@click.option("--pick", help="Put this variant in the bundle instead of the recommended one.")
@click.option("--io-type", "io_dtype", type=click.Choice(["int8", "uint8", "float32"]),
              help="Input/output type of int8 variants (default: the target's).")
@click.option("--calibration-samples", default=200, show_default=True, type=click.IntRange(1),
              help="Calibration inputs the int8 and 16x8 variants are calibrated on (at most).")
@click.option("--max-accuracy-drop", "max_accuracy_drop", metavar="PP|none",
              help="The accuracy gate (on with --eval): fail when a class-score output loses more top-1 "
                   "(or agreement) than this many percentage points against the float model "
                   "[default: 1.0]; none turns the gate off.")
@click.option("--min-snr-db", default=20.0, show_default=True, type=float,
              help="The gate's floor for every other output: SNR against the float model, in dB.")
@click.option("--task", type=click.Choice(["classification", "detection", "landmarks", "segmentation"]),
              help="Adds the task's figures (matched detections, point error, mask IoU); classification "
                   "makes every one-row output class scores.")
@click.option("--prefer", default="balanced", show_default=True,
              type=click.Choice(["balanced", "size", "speed"]),
              help="Recommendation: the smallest that passes and is at most 1.5x slower than float32 "
                   "(balanced), the smallest (size), or the fastest (speed).")
@click.option("--keep-float-layers", type=click.Choice(["auto"]),
              help="int8: keep the worst layers (QuantizationDebugger) in float until "
                   "--max-accuracy-drop is met.")
@click.option("--sparsity", "prune_sparsity", default=0.8, show_default=True,
              type=click.FloatRange(0, 1, max_open=True), help="Target sparsity of pruned variants.")
@click.option("--prune-epochs", default=4, show_default=True, type=click.IntRange(1),
              help="Fine-tuning epochs of pruned variants (sparsity rises over the first 70 %).")
@click.option("--m-by-n", "m_by_n", help="Structured pruning, e.g. 2:4.")
@click.option("--xnnpack-policy", is_flag=True,
              help="tf-keras models: prune only what XNNPACK's sparse kernels use "
                   "(tfmot's PruneForLatencyOnXNNPack).")
@click.option("--per-tensor", is_flag=True, help="Per-tensor weight scales (default: per channel).")
@click.option("--preprocess", help="For image folders: size=96x96,scale=1/255,mean=..,std=..,"
                                   "layout=nhwc|nchw,color=rgb|gray")
@click.option("--no-latency", is_flag=True, help="Skip the latency measurements.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No step messages or progress bars.")
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out (refused without it).")
def convert(model: Path, calib: Path, eval_path: Path | None, train_path: Path | None, out: Path,
            key: Path, unsigned: bool, name: str | None, version: str, target: str | None, mode: str | None,
            variants: str | None, pick: str | None, io_dtype: str | None, calibration_samples: int,
            max_accuracy_drop: str | None, min_snr_db: float, task: str | None, prefer: str,
            keep_float_layers: str | None, prune_sparsity: float,
            prune_epochs: int, m_by_n: str | None, xnnpack_policy: bool, per_tensor: bool,
            preprocess: str | None, no_latency: bool, as_json: bool, quiet: bool, force: bool) -> None:
    """Quantise (and optionally prune) MODEL, compare variants, pack a signed bundle.

    MODEL is a Keras 3 .keras, a tf-keras .h5, a SavedModel folder or a float .tflite.

    \b
    Examples:
      edgefleet convert model.keras --calib calib.npz --eval eval.npz --out digits-1.efb
      edgefleet convert cam.keras --calib photos/ --preprocess size=96x96 --target coral-usb --out cam-1.efb
      edgefleet convert m.keras --calib calib.npz --train train.npz --variants int8,pruned-int8 --out p.efb
    """
    need("converter", "tensorflow")
    from edgefleet.progress import ProgressBars
    from edgefleet.quiet import quiet_native_output

    budget = _budget(max_accuracy_drop)
    if keep_float_layers and budget is None:
        raise click.UsageError("--keep-float-layers auto needs the accuracy gate "
                               "(not --max-accuracy-drop none)")
    structure = None
    if m_by_n:
        try:
            m, n = (int(v) for v in m_by_n.split(":"))
        except ValueError:
            raise click.BadParameter("use M:N, e.g. 2:4", param_hint="--m-by-n") from None
        structure = (m, n)
    show = not (quiet or as_json)
    # TensorFlow's C++ log lines are shown only if the conversion fails unexpectedly
    with ProgressBars(show) as bars, quiet_native_output(expected=(click.ClickException,)) as to_stderr:
        from edgefleet.converter.build import convert as run_convert
        from edgefleet.converter.errors import ConversionError

        def warnings_only(line: str) -> None:  # --quiet and --json still show warnings, on stderr
            if line.startswith("warning: "):
                to_stderr(line)

        try:
            result = run_convert(
                model, calib, out, None if unsigned else key, progress=bars.step if show else warnings_only,
                on_progress=bars.update if show else None, eval_path=eval_path,
                train_path=train_path, name=name, version=version, target=target, mode=mode,
                variants=variants, pick=pick, io_dtype=io_dtype,
                calibration_samples=calibration_samples, max_accuracy_drop=budget, min_snr_db=min_snr_db,
                task=task, prefer=prefer,
                keep_float_layers=keep_float_layers, prune_sparsity=prune_sparsity,
                prune_epochs=prune_epochs, prune_m_by_n=structure, prune_xnnpack_policy=xnnpack_policy,
                per_channel=not per_tensor, preprocess=preprocess,
                measure_latency=not no_latency, force=force)
        except ConversionError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json({**result.report, "bundle_path": str(result.bundle_path),
                   "bundle_size": result.bundle_size,
                   "report_paths": {k: str(v) for k, v in result.report_paths.items()}})
        return
    click.echo(_convert_summary(result))


def _budget(text: str | None) -> float | str | None:
    """--max-accuracy-drop: a number, "none" (the gate off), or not given (the default)."""
    from edgefleet.converter.quantization.gate import DEFAULT

    if text is None:
        return DEFAULT
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: give percentage points (e.g. 0.5) or none",
                                 param_hint="--max-accuracy-drop") from None


def _convert_summary(result: Any) -> str:
    r = result.report
    lines = [f"wrote {result.bundle_path} ({result.bundle_size:,} bytes) holding {r['chosen']}; "
             f"report {', '.join(str(p) for p in result.report_paths.values())}"]
    flt = r["float"]

    def acc(metrics: dict[str, Any]) -> str:
        if metrics.get("top1") is not None:
            return f"top-1 {100 * metrics['top1']:.2f}%"
        if metrics.get("agreement") is not None:
            return f"agree {100 * metrics['agreement']:.2f}%"
        if metrics.get("snr_db") is not None:  # no class scores: the lowest SNR over the outputs
            return f"SNR {metrics['snr_db']:.1f} dB"
        return "accuracy n/a"

    def p50(latency: dict[str, float]) -> str:
        return f"p50 {latency['1']:.3f} ms" if "1" in latency else "p50 n/a"

    def sizes(row: dict[str, Any]) -> str:  # the compressed size is what the recommendation compares
        return f"{row['size_bytes']:>10,} B {row['compressed_bytes']:>9,} B zlib"

    from edgefleet.converter.report import has_float32_variant

    if not has_float32_variant(r):  # a float32 variant is the reference itself: one row
        lines.append(f"  {'float32':<14} {sizes(flt)}  {acc(flt['metrics']):<16} "
                     f"{p50(flt['latency_p50_ms'])}")
    for v in r["variants"]:
        mark = "*" if v["name"] == r["chosen"] else " "
        lines.append(f"{mark} {v['name']:<14} {sizes(v)}  {acc(v['metrics']):<16} "
                     f"{p50(v['latency_p50_ms'])}  ({v['size_ratio']:.2f}x float)")
    lines.append(f"  {r['recommendation']}")
    if r.get("peak_rss_bytes"):
        lines.append(f"  took {r['wall_seconds']:.0f} s, peak memory (RSS) "
                     f"{r['peak_rss_bytes'] / 2**30:.2f} GiB")
    lines += [f"  note: {v['name']}: {v['float_ops']['note']}" for v in r["variants"] if v.get("float_ops")]
    lines += [f"  warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)


@click.command()
@click.option("--teacher", required=True, type=click.Path(exists=True, path_type=Path),
              help="The trained teacher (Keras 3 .keras).")
@click.option("--student", "student_path", type=click.Path(exists=True, path_type=Path),
              help="A student architecture (.keras; its weights are reset).")
@click.option("--width", type=click.FloatRange(0, 1, min_open=True),
              help="Or: the teacher's architecture with every layer's width scaled by this.")
@click.option("--train", "train_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="Training data: .npz with x and labels y.")
@click.option("--eval", "eval_path", type=click.Path(exists=True, path_type=Path),
              help="Evaluation data (.npz with x, y) for the comparison.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to save the distilled student (.keras).")
@click.option("--temperature", default=4.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Softens both models' outputs; higher shows the student more of the teacher's ranking.")
@click.option("--alpha", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Weight of the hard-label loss (1 - alpha on the teacher's soft targets).")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(1),
              help="Training epochs of the student (and of the labels-only baseline).")
@click.option("--learning-rate", default=1e-3, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Adam's starting rate (cosine decay to 0).")
@click.option("--no-baseline", is_flag=True, help="Skip training the student on labels alone.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the shuffling, the dropout and the student's initial weights.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def distill(teacher: Path, student_path: Path | None, width: float | None, train_path: Path,
            eval_path: Path | None, out: Path, temperature: float, alpha: float, epochs: int,
            learning_rate: float, no_baseline: bool, seed: int, as_json: bool, quiet: bool) -> None:
    """Train a small student on a teacher's softened outputs (knowledge distillation), and
    compare it with the teacher and with the same student trained on labels alone.

    \b
    Example:
      edgefleet distill --teacher model.keras --width 0.5 --train train.npz --out student.keras
    """
    need("converter", "tensorflow")
    from edgefleet.progress import ProgressBars
    from edgefleet.quiet import quiet_native_output

    if (student_path is None) == (width is None):
        raise click.UsageError("give --student FILE or --width FRACTION (one of them)")
    if out.suffix != ".keras":
        raise click.BadParameter("the student is saved as a Keras 3 model: name it *.keras",
                                 param_hint="--out")
    problem = unwritable(out)
    if problem is not None:  # before TensorFlow loads and the training starts
        raise click.ClickException(f"cannot write --out {out}: {problem}")
    show = not (quiet or as_json)
    with ProgressBars(show) as bars, quiet_native_output(expected=(click.ClickException,)):
        from edgefleet.converter.distillation import DistillOptions, distill_files
        from edgefleet.converter.errors import ConversionError

        try:
            figures = distill_files(
                teacher, student_path, width, train_path, eval_path, out,
                DistillOptions(temperature=temperature, alpha=alpha, epochs=epochs,
                               learning_rate=learning_rate, seed=seed),
                baseline=not no_baseline, progress=bars.update if show else None)
        except ConversionError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json(figures)
        return
    click.echo(_distill_summary(figures, out))


def _distill_summary(f: dict[str, Any], out: Path) -> str:
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    lines = [f"wrote {out}",
             f"  teacher            {f['teacher_params']:>9,} parameters  top-1 {pct(f['teacher_top1'])}",
             f"  student (distilled) {f['student_params']:>8,} parameters  top-1 {pct(f['student_top1'])}"
             f"  ({100 * f['student_params'] / f['teacher_params']:.1f}% of the teacher)"]
    if f.get("baseline_top1") is not None:
        lines.append(f"  student (labels)   {f['student_params']:>9,} parameters  "
                     f"top-1 {pct(f['baseline_top1'])}")
    return "\n".join(lines)
