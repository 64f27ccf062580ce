"""`convert`: model + data -> variants measured side by side -> the recommended (or chosen)
one in a signed bundle, with a report in JSON, Markdown and PNG.

Steps: load the model (any format of converter.sources) and data by input name
(converter.data); warn about data ranges that differ (converter.data.ranges,
converter.input_ranges); make the float reference (converter.evaluation); prune once if a
pruned variant is asked for (converter.pruning); build every variant
(converter.quantization); measure each output of each with the device's runtime
(converter.variants); apply the accuracy gate and, for int8, the QuantizationDebugger
(converter.quantization.gate, .debugger); check Edge TPU and XNNPACK-sparse readiness
(converter.targets); recommend; write golden set, manifest, bundle and report
(converter.artifacts); a failed gate writes the report alone. Bundle format:
edgefleet.protocol.bundle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.converter.artifacts import Artifacts, ConversionResult
from edgefleet.converter.data import Dataset, Preprocess
from edgefleet.converter.early_checks import early_checks, prune_options
from edgefleet.converter.errors import ConversionError
from edgefleet.converter.memory import StepPeaks
from edgefleet.converter.quantization.gate import DEFAULT, DEFAULT_MIN_SNR_DB, gate_budget
from edgefleet.converter.quantization.tasks import check_task
from edgefleet.converter.targets.profile import Target, resolve_target
from edgefleet.converter.tflite_edit import compact
from edgefleet.converter.variants import VariantResult, VariantSpec, check_prefer, measure, parse_variants
from edgefleet.protocol.signing import SignatureError, load_signer
from edgefleet.runtime import RuntimeLoadError, TFLiteModel

DEBUGGER_SAMPLES = 64
Say = Callable[[str], None]
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ConvertOptions:
    """Everything `edgefleet convert` can be told, with its defaults."""

    eval_path: str | Path | None = None
    train_path: str | Path | None = None  # for pruned variants (fine-tuning)
    name: str | None = None
    version: str = "1"
    mode: str | None = None  # one variant; None: the target's default
    variants: str | None = None  # e.g. "int8,fp16,dynamic,pruned-int8"
    pick: str | None = None  # put this variant in the bundle instead of the recommended one
    io_dtype: str | None = None  # int8 I/O: int8 | uint8 | float32 (default from the target)
    calibration_samples: int = 200
    golden_samples: int = 16
    target: str | None = None  # board profile; None: generic profile of this machine's arch
    # percentage points a class-score output may lose; None: no gate; DEFAULT: 1.0 with --eval
    max_accuracy_drop: float | str | None = DEFAULT
    min_snr_db: float = DEFAULT_MIN_SNR_DB  # the gate's floor for every other output
    task: str | None = None  # classification | detection | landmarks | segmentation
    prefer: str = "balanced"  # the recommendation: balanced (size, unless much slower) | size | speed
    keep_float_layers: str | None = None  # "auto": keep worst int8 layers in float until the gate passes
    max_float_layers: int = 10
    prune_sparsity: float = 0.8
    prune_epochs: int = 4
    prune_m_by_n: tuple[int, int] | None = None
    prune_xnnpack_policy: bool = False  # tf-keras models: tfmot's PruneForLatencyOnXNNPack
    per_channel: bool = True
    top_k: int = 5
    preprocess: str | None = None  # for image folders, Preprocess.parse syntax
    measure_latency: bool = True
    chart: bool = True
    force: bool = False  # replace an existing bundle at --out


def convert(
    model_path: str | Path,
    calib_path: str | Path,
    out_path: str | Path,
    key_path: str | Path | None,
    *,
    progress: Say | None = None,
    on_progress: ProgressFn | None = None,
    options: ConvertOptions | None = None,
    **overrides: Any,
) -> ConversionResult:
    """Convert MODEL_PATH with CALIB_PATH data into a signed bundle at OUT_PATH.

    Keyword OVERRIDES set ConvertOptions fields (convert(..., eval_path=p, mode="int8")).
    PROGRESS receives one line per step; ON_PROGRESS (task, done, total) drives bars.
    """
    opts = options or ConvertOptions()
    if overrides:
        unknown = set(overrides) - set(ConvertOptions.__dataclass_fields__)
        if unknown:
            raise TypeError(f"convert() got unknown options {sorted(unknown)}")
        opts = ConvertOptions(**{**opts.__dict__, **overrides})
    return _Conversion(Path(model_path), Path(calib_path), Path(out_path),
                       None if key_path is None else Path(key_path), opts,
                       progress or (lambda _m: None), on_progress).run()


class _Conversion(Artifacts):
    def __init__(self, model_path: Path, calib_path: Path, out_path: Path, key_path: Path | None,
                 opts: ConvertOptions, say: Say, on_progress: ProgressFn | None):
        self.model_path, self.calib_path, self.out_path = model_path, calib_path, out_path
        self.opts, self.say, self.on_progress = opts, say, on_progress
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        # cheap checks first: a typo should not cost a conversion
        if opts.golden_samples < 1 or opts.calibration_samples < 1:
            raise ConversionError("calibration and golden sample counts must be at least 1")
        if out_path.is_dir():
            raise ConversionError(f"output {out_path} is a directory; give a file name such as m.efb")
        if opts.keep_float_layers not in (None, "auto"):
            raise ConversionError(f"--keep-float-layers takes 'auto' (got {opts.keep_float_layers!r})")
        try:
            self.key = load_signer(key_path)  # None: --unsigned
        except SignatureError as exc:
            raise ConversionError(str(exc)) from None
        self.target: Target = resolve_target(opts.target)
        self.specs = self._variant_specs()
        self.name = opts.name if opts.name is not None else model_path.stem
        if not self.name.strip():
            raise ConversionError("the bundle name is empty")
        self.preprocess = Preprocess.parse(opts.preprocess) if opts.preprocess else None
        check_task(opts.task)
        check_prefer(opts.prefer)
        self.max_drop = gate_budget(opts.max_accuracy_drop, opts.min_snr_db, opts.eval_path is not None,
                                    opts.keep_float_layers is not None)
        if opts.prune_m_by_n is not None:
            m, n = opts.prune_m_by_n
            if not 0 < m < n:
                raise ConversionError(f"--m-by-n {m}:{n}: keep M of every N weights with 0 < M < N, e.g. 2:4")
        if opts.pick is not None:
            picked = VariantSpec.parse(opts.pick).name
            if picked not in [s.name for s in self.specs]:
                raise ConversionError(f"--pick {opts.pick}: not among the variants being built "
                                      f"({', '.join(s.name for s in self.specs)})")
        self.train = early_checks(model_path, out_path, opts, self.target, self.specs, self.preprocess)

    def _variant_specs(self) -> list[VariantSpec]:
        if self.opts.variants and self.opts.mode:
            raise ConversionError("give --mode or --variants, not both")
        if self.opts.variants:
            return parse_variants(self.opts.variants)
        if self.opts.mode:
            return [VariantSpec.parse(self.opts.mode)]
        return parse_variants(self.target.default_variants)

    def _step(self, key: str, message: str) -> float:
        self.say(message)
        self.memory.start()
        return time.perf_counter()

    def _done(self, key: str, started: float) -> None:
        self.timings[key] = round(time.perf_counter() - started, 3)
        self.memory.done(key)

    def run(self) -> ConversionResult:
        self.memory = StepPeaks()  # wall time and peak RSS from here to the report
        from edgefleet.converter.sources import load_model_source

        t = self._step("load", f"loading model {self.model_path}")
        source = load_model_source(self.model_path)
        if self.target.accelerator in ("edgetpu", "npu") and source.kind != "tflite":
            source.batch_size = 1  # accelerators need every size fixed at compile time
        from edgefleet.converter.evaluation import golden_set, load_all, make_reference

        calib, evaluation, found, self.range_note = load_all(source, self.calib_path, self.opts.eval_path,
                                                             self.preprocess, self.say)
        if self.train is not None:  # pruning's data, loaded and checked before TensorFlow loaded
            self._check_shape(source, self.train[0], "training")
        self._warn(found)  # before any conversion: data that does not fit is the likeliest mistake
        self._done("load", t)

        t = self._step("float", "measuring the float model")
        reference = make_reference(source, calib, evaluation, self.opts.task, self.opts.top_k)
        self._warn(reference.warnings)
        # measured as written (repeated vectors shared, as every variant is), so ratios compare like with like
        float_measured = measure(compact(source.float_tflite()), None, reference.sample,
                                 latency=self.opts.measure_latency)
        self._done("float", t)

        pruning = None
        pruned_source = None
        if any(s.pruned for s in self.specs):
            pruned_source, pruning = self._prune(source, evaluation)

        results: list[VariantResult] = []
        self.failed: list[dict[str, str]] = []
        for spec in self.specs:
            src = pruned_source if spec.pruned else source
            try:
                results.append(self._build_variant(spec, src, reference))
            except (ConversionError, RuntimeLoadError) as exc:
                if len(self.specs) == 1:
                    raise ConversionError(f"{spec.name}: {exc}") from None
                # one variant the runtime refuses must not cost the others: report it
                self.say(f"{spec.name} failed: {exc}")
                self.failed.append({"name": spec.name, "error": str(exc)})
                self.warnings.append(f"variant {spec.name} failed and is not in the comparison: {exc}")
        if not results:
            raise ConversionError("every variant failed:\n  " + "\n  ".join(
                f"{f['name']}: {f['error']}" for f in self.failed))

        chosen, recommendation = self._choose(results, source, reference, float_measured, pruning)
        self.say(f"recommended: {recommendation}")
        if self.target.requires_edgetpu_compiler:
            self._compile_for_edgetpu(chosen)

        t = self._step("golden", f"choosing golden self-test samples (at most {self.opts.golden_samples})")
        model = TFLiteModel(chosen.model_bytes)
        golden, selftest = golden_set(model, len(chosen.model_bytes), reference, self.opts.golden_samples)
        self._done("golden", t)

        manifest = self._manifest(chosen, model, selftest, float_measured.size_bytes, reference)
        report = self._report(source, chosen, recommendation, results, float_measured, reference,
                              pruning, model, manifest)
        return self._write(manifest, report, chosen, golden)

    # steps
    def _check_shape(self, source: Any, x: np.ndarray, what: str) -> None:
        if tuple(x.shape[1:]) != tuple(source.input_shape):
            raise ConversionError(
                f"{what} data has samples of shape {tuple(x.shape[1:])}, but the model takes "
                f"{tuple(source.input_shape)}; preprocess the data to the model's input")

    def _prune(self, source: Any, evaluation: Dataset | None) -> tuple[Any, dict]:
        from edgefleet.converter.pruning import prune
        from edgefleet.converter.sources import source_from_keras

        if source.keras_model is None:
            raise ConversionError(f"pruning needs a Keras model (.keras or .h5); {source.kind} "
                                  "sources cannot be fine-tuned")
        if len(source.input_shapes) != 1:
            raise ConversionError("pruning fine-tunes one-input models only (its --train data is x, y)")
        eval_x = next(iter(evaluation.inputs.values())) if evaluation is not None else None
        eval_y = evaluation.labels if evaluation is not None else None
        train_x, train_y = self.train  # type: ignore[misc]
        opts = prune_options(self.opts)
        t = self._step("prune", f"pruning to {opts.target_sparsity:.0%} sparsity, fine-tuning "
                                f"{opts.epochs} epochs on {len(train_x)} samples")
        result = prune(source.keras_model, train_x, train_y, opts, eval_x, eval_y,
                       progress=self.on_progress)
        self._done("prune", t)
        info = {"framework": result.framework, "overall_sparsity": round(result.overall_sparsity, 4),
                "layer_sparsity": {k: round(v, 4) for k, v in result.layer_sparsity.items()},
                "target_sparsity": opts.target_sparsity, "epochs": opts.epochs,
                "m_by_n": list(opts.m_by_n) if opts.m_by_n else None, "history": result.history}
        pruned = source_from_keras(result.model)
        pruned.batch_size = source.batch_size
        return pruned, info

    def _io_dtype(self, spec: VariantSpec) -> str | None:
        if spec.mode != "int8":
            return None
        return self.opts.io_dtype or self.target.io_dtype

    def _build_variant(self, spec: VariantSpec, source: Any, reference: Any) -> VariantResult:
        from edgefleet.converter.quantization import QuantOptions, quantize
        from edgefleet.converter.quantization.gate import DEFAULT_MAX_DROP_PP
        from edgefleet.converter.targets.edgetpu import check_edgetpu
        from edgefleet.converter.targets.xnnpack_sparse import check_xnnpack_sparse

        qopts = QuantOptions(spec.mode, io_dtype=self._io_dtype(spec),
                             calibration_samples=self.opts.calibration_samples,
                             per_channel=self.opts.per_channel,
                             # int8 + EXPERIMENTAL_SPARSITY fails in LiteRT's XNNPACK (DENSIFY before
                             # FULLY_CONNECTED) and zips worse than plain zeros: float modes only
                             sparsity=spec.pruned and spec.mode in ("float32", "float16"))
        t = self._step(f"variant:{spec.name}", f"building {spec.name}")
        # lossless: each repeated vector (per-channel zero points above all) written once
        model_bytes = compact(quantize(source, reference.calib.inputs, qopts, progress=self.on_progress))
        from edgefleet.converter.quantization.checks import load_and_run_check, not_quantised_reason

        # a model LiteRT refuses, or one the quantiser left as it was, is a failed variant
        problem = load_and_run_check(model_bytes, reference.sample)
        if problem is not None:
            raise ConversionError(f"LiteRT cannot run the {spec.name} model: {problem}")
        problem = not_quantised_reason(spec.mode, source.float_tflite(), model_bytes)
        if problem is not None:
            raise ConversionError(problem)
        measured = measure(model_bytes, reference, reference.sample, self.opts.measure_latency, self.warnings)
        result = VariantResult(spec, model_bytes, measured)
        if measured.metrics:
            result.gate = self._gate(reference, measured.metrics, spec.name, self.max_drop)
            if self.max_drop is None:  # no gate: a large loss is still worth a warning
                loose = self._gate(reference, measured.metrics, spec.name, DEFAULT_MAX_DROP_PP)
                result.gate = None
                if not loose.passed:
                    self.warnings.append(f"{loose.message}; the accuracy gate is off (--max-accuracy-drop "
                                         "none): check the calibration data")
        if spec.mode == "int8" and source.kind != "tflite":
            self._debug_int8(result, source, reference)
        result.edgetpu = check_edgetpu(result.model_bytes).as_dict()
        if spec.pruned:
            result.xnnpack_sparse = check_xnnpack_sparse(result.model_bytes)
        self._done(f"variant:{spec.name}", t)
        return result

    def _gate(self, reference: Any, metrics: dict[str, Any], name: str, budget: float | None) -> Any:
        from edgefleet.converter.quantization.gate import check_outputs

        if budget is None:
            return None
        return check_outputs(reference.figures, metrics, budget, self.opts.min_snr_db, name)

    def _debug_int8(self, result: VariantResult, source: Any, reference: Any) -> None:
        """Worst layers from TensorFlow's QuantizationDebugger; with --keep-float-layers auto,
        keep them in float until the gate passes."""
        from edgefleet.converter.quantization.debugger import (
            DebuggerError,
            keep_float_layers_until,
            layer_errors,
        )

        if len(reference.calib.inputs) != 1:  # the debugger's dataset feeds one input
            result.notes.append("the QuantizationDebugger's layer errors are measured for one-input "
                                "models only")
            return
        calib_x = next(iter(reference.calib.inputs.values()))
        factory = source.tflite_converter
        io = self._io_dtype(result.spec) or "int8"
        rescue = (self.opts.keep_float_layers == "auto" and result.gate is not None
                  and not result.gate.passed and reference.evaluation is not None)
        if rescue and io not in ("int8", "uint8"):
            result.notes.append("--keep-float-layers auto needs int8 or uint8 input/output")
            rescue = False
        if not rescue:
            try:
                ranking = layer_errors(factory, calib_x, DEBUGGER_SAMPLES)
            except DebuggerError as exc:
                # the ranking only informs the report: the variant stands without it
                why = f"no per-layer error ranking (worst layers): {exc}"
                result.notes.append(why)
                self.warnings.append(f"{result.spec.name}: {why}")
                return
            result.worst_layers = [e.as_dict() for e in ranking[:5]]
            return
        budget = result.gate.max_drop_pp

        def evaluate(model_bytes: bytes) -> Any:
            return self._gate(reference, reference.measure(model_bytes)[0], result.spec.name, budget)

        try:
            kept = keep_float_layers_until(factory, calib_x, evaluate, io_dtype=io,
                                           max_layers=self.opts.max_float_layers, progress=self.say,
                                           samples=DEBUGGER_SAMPLES)
        except DebuggerError as exc:
            raise ConversionError(
                f"--keep-float-layers auto chooses the layers to keep in float from the "
                f"QuantizationDebugger's ranking, and it has none: {exc}. Without "
                f"--keep-float-layers the fully int8 model is built (it fails the gate: "
                f"{result.gate.message})") from None
        # the debugger ran once: its ranking serves the report too
        result.worst_layers = [e.as_dict() for e in kept.layers[:5]]
        result.notes.append(kept.message)
        if kept.kept or kept.passed:
            result.model_bytes = kept.model
            result.kept_float_layers = list(kept.kept)
            result.measured = measure(kept.model, reference, reference.sample, self.opts.measure_latency,
                                      self.warnings)
            # the verdict on that very model is already in the history
            result.gate = next(gate for layers, gate in kept.history if layers == kept.kept)

    def _compile_for_edgetpu(self, chosen: VariantResult) -> None:
        import tempfile

        from edgefleet.converter.targets.edgetpu_compiler import run_compiler

        with tempfile.TemporaryDirectory(prefix="edgefleet-edgetpu-") as tmp:
            model_path = Path(tmp) / "model.tflite"
            model_path.write_bytes(chosen.model_bytes)
            compiled = run_compiler(model_path, out_dir=Path(tmp) / "out")
            if compiled is None:
                self.warnings.append(
                    "edgetpu_compiler is not installed: the bundle holds the int8 model, which the Edge "
                    "TPU delegate cannot accelerate until it is compiled; the Edge TPU figures in this "
                    "report are predictions from Coral's documented op table")
                return
            chosen.edgetpu = {**(chosen.edgetpu or {}), "compiler": compiled.as_dict()}
            out = Path(compiled.output_model) if compiled.output_model else None
            if compiled.ok and out is not None and out.exists():
                # the compiled model is what the Edge TPU runs; the int8 one would run on the CPU
                chosen.model_bytes = out.read_bytes()
                chosen.notes.append(f"bundle holds the model compiled by edgetpu_compiler "
                                    f"{compiled.version}: {compiled.ops_on_edgetpu} ops on the Edge TPU, "
                                    f"{compiled.ops_on_cpu} on the CPU")
            else:
                self.warnings.append("edgetpu_compiler did not produce a model; the bundle holds the "
                                     "uncompiled int8 model (see the compiler log in report.json)")
