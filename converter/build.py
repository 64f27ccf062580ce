"""`convert`: model + data -> variants measured side by side -> the recommended (or chosen)
one in a signed bundle, with a report in JSON, Markdown and PNG.

Steps: load the model (any format of converter.sources) and data (converter.data); make
the float reference; prune once if a pruned variant is asked for (converter.pruning);
build every variant (converter.quantization); measure each with the device's runtime
(converter.variants); apply the accuracy gate and, for int8, the QuantizationDebugger
(converter.quantization.gate, .debugger); check Edge TPU and XNNPACK-sparse readiness
(converter.targets); recommend; write golden set, manifest, bundle and report
(converter.artifacts). Bundle format: edgefleet.protocol.bundle.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.converter.artifacts import Artifacts, ConversionResult, check_out_path
from edgefleet.converter.data import Preprocess, load_dataset
from edgefleet.converter.errors import ConversionError
from edgefleet.converter.golden import golden_npz, pick_golden
from edgefleet.converter.targets.profile import Target, resolve_target
from edgefleet.converter.variants import VariantResult, VariantSpec, measure, parse_variants, recommend
from edgefleet.protocol.signing import SignatureError, SigningKey
from edgefleet.runtime import RuntimeLoadError, TFLiteModel

# Without --max-accuracy-drop, a variant must stay within this budget to be recommended.
DEFAULT_RECOMMEND_BUDGET_PP = 1.0
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
    max_accuracy_drop: float | None = None  # percentage points; None: no gate (but see recommend)
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


def convert(
    model_path: str | Path,
    calib_path: str | Path,
    out_path: str | Path,
    key_path: str | Path,
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
    return _Conversion(Path(model_path), Path(calib_path), Path(out_path), Path(key_path), opts,
                       progress or (lambda _m: None), on_progress).run()


class _Conversion(Artifacts):
    def __init__(self, model_path: Path, calib_path: Path, out_path: Path, key_path: Path,
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
            self.key = SigningKey.load(key_path)
        except SignatureError as exc:
            raise ConversionError(str(exc)) from None
        self.target: Target = resolve_target(opts.target)
        self.specs = self._variant_specs()
        self.name = opts.name if opts.name is not None else model_path.stem
        if not self.name.strip():
            raise ConversionError("the bundle name is empty")
        if any(s.pruned for s in self.specs) and opts.train_path is None:
            raise ConversionError("pruned variants fine-tune the model: give --train data (.npz with x, y)")
        self.preprocess = Preprocess.parse(opts.preprocess) if opts.preprocess else None
        budget = opts.max_accuracy_drop
        if budget is not None and not math.isfinite(budget):
            raise ConversionError(f"--max-accuracy-drop must be a number of percentage points (got {budget})")
        if budget is not None and opts.eval_path is None:
            raise ConversionError("--max-accuracy-drop needs evaluation data (--eval)")
        if opts.prune_m_by_n is not None:
            m, n = opts.prune_m_by_n
            if not 0 < m < n:
                raise ConversionError(f"--m-by-n {m}:{n}: keep M of every N weights with 0 < M < N, e.g. 2:4")
        if opts.pick is not None:
            picked = VariantSpec.parse(opts.pick).name
            if picked not in [s.name for s in self.specs]:
                raise ConversionError(f"--pick {opts.pick}: not among the variants being built "
                                      f"({', '.join(s.name for s in self.specs)})")
        check_out_path(model_path, out_path)

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
        return time.perf_counter()

    def _done(self, key: str, started: float) -> None:
        self.timings[key] = round(time.perf_counter() - started, 3)

    def run(self) -> ConversionResult:
        from edgefleet.converter.sources import load_model_source

        t = self._step("load", f"loading model {self.model_path}")
        source = load_model_source(self.model_path)
        if self.target.accelerator in ("edgetpu", "npu") and source.kind != "tflite":
            source.batch_size = 1  # accelerators need every size fixed at compile time
        self.say(f"loading calibration data {self.calib_path}")
        calib_x, _ = load_dataset(self.calib_path, self.preprocess)
        self._check_shape(source, calib_x, "calibration")
        eval_x = eval_y = None
        if self.opts.eval_path is not None:
            self.say(f"loading evaluation data {self.opts.eval_path}")
            eval_x, eval_y = load_dataset(self.opts.eval_path, self.preprocess)
            self._check_shape(source, eval_x, "evaluation")
            if eval_y is None:
                self.warnings.append("evaluation data has no labels: accuracy is agreement with the "
                                     "float model's top class, plus SNR and cosine similarity")
        else:
            self.warnings.append("no evaluation data given: accuracy was not measured, so no "
                                 "accuracy gate could apply")
        self._done("load", t)

        t = self._step("float", "measuring the float model")
        from edgefleet.converter.quantization.metrics import reference_metrics

        reference = source.predict(eval_x) if eval_x is not None else None
        float_bytes = source.float_tflite()
        sample = (eval_x if eval_x is not None else calib_x)[0]
        float_measured = measure(float_bytes, None, None, None, sample, latency=self.opts.measure_latency)
        if reference is not None and eval_y is not None:
            classes = reference.shape[-1]
            if eval_y.min() < 0 or eval_y.max() >= classes:
                raise ConversionError(
                    f"evaluation labels run from {eval_y.min()} to {eval_y.max()}, but the model has "
                    f"{classes} outputs: labels must be class indices 0..{classes - 1}")
        float_metrics = reference_metrics(reference, eval_y, self.opts.top_k) if reference is not None else {}
        self._done("float", t)

        pruning = None
        pruned_source = None
        if any(s.pruned for s in self.specs):
            pruned_source, pruning = self._prune(source, eval_x, eval_y)

        results: list[VariantResult] = []
        self.failed: list[dict[str, str]] = []
        for spec in self.specs:
            src = pruned_source if spec.pruned else source
            try:
                results.append(self._build_variant(spec, src, calib_x, eval_x, eval_y, reference,
                                                   float_metrics, sample))
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

        chosen, recommendation = self._choose(results)
        self.say(f"recommended: {recommendation}")
        if self.target.requires_edgetpu_compiler:
            self._compile_for_edgetpu(chosen)

        t = self._step("golden", f"choosing {self.opts.golden_samples} golden self-test samples")
        model = TFLiteModel(chosen.model_bytes)
        golden_pool = eval_x if eval_x is not None else calib_x
        golden_x = pick_golden(model, golden_pool, self.opts.golden_samples)
        golden = golden_npz(model, golden_x, source.predict(golden_x))
        self._done("golden", t)

        manifest = self._manifest(chosen, model, len(golden_x), float_measured.size_bytes, eval_x,
                                  float_metrics)
        report = self._report(source, chosen, recommendation, results, float_measured, float_metrics,
                              pruning, calib_x, eval_x, eval_y, model, manifest)
        return self._write(manifest, report, chosen, golden)

    # steps
    def _check_shape(self, source: Any, x: np.ndarray, what: str) -> None:
        if tuple(x.shape[1:]) != tuple(source.input_shape):
            raise ConversionError(
                f"{what} data has samples of shape {tuple(x.shape[1:])}, but the model takes "
                f"{tuple(source.input_shape)}; preprocess the data to the model's input")

    def _prune(self, source: Any, eval_x: np.ndarray | None, eval_y: np.ndarray | None) -> tuple[Any, dict]:
        from edgefleet.converter.pruning import PruneOptions, prune
        from edgefleet.converter.sources import source_from_keras

        if source.keras_model is None:
            raise ConversionError(f"pruning needs a Keras model (.keras or .h5); {source.kind} "
                                  "sources cannot be fine-tuned")
        train_x, train_y = load_dataset(self.opts.train_path, self.preprocess)  # type: ignore[arg-type]
        self._check_shape(source, train_x, "training")
        opts = PruneOptions(target_sparsity=self.opts.prune_sparsity, epochs=self.opts.prune_epochs,
                            m_by_n=self.opts.prune_m_by_n, xnnpack_policy=self.opts.prune_xnnpack_policy)
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

    def _build_variant(self, spec: VariantSpec, source: Any, calib_x: np.ndarray,
                       eval_x: np.ndarray | None, eval_y: np.ndarray | None,
                       reference: np.ndarray | None, float_metrics: dict[str, Any],
                       sample: np.ndarray) -> VariantResult:
        from edgefleet.converter.quantization import QuantOptions, quantize
        from edgefleet.converter.quantization.gate import check_accuracy_drop
        from edgefleet.converter.targets.edgetpu import check_edgetpu
        from edgefleet.converter.targets.xnnpack_sparse import check_xnnpack_sparse

        qopts = QuantOptions(spec.mode, io_dtype=self._io_dtype(spec),
                             calibration_samples=self.opts.calibration_samples,
                             per_channel=self.opts.per_channel,
                             # int8 + EXPERIMENTAL_SPARSITY fails in LiteRT's XNNPACK (DENSIFY before
                             # FULLY_CONNECTED) and zips worse than plain zeros: float modes only
                             sparsity=spec.pruned and spec.mode in ("float32", "float16"))
        t = self._step(f"variant:{spec.name}", f"building {spec.name}")
        model_bytes = quantize(source, calib_x, qopts, progress=self.on_progress)
        measured = measure(model_bytes, reference, eval_x, eval_y, sample, self.opts.top_k,
                           self.opts.measure_latency)
        result = VariantResult(spec, model_bytes, measured)
        budget = self.opts.max_accuracy_drop
        if budget is None and len(self.specs) > 1:
            budget = DEFAULT_RECOMMEND_BUDGET_PP  # only to pick among several, never to fail
        if budget is not None and measured.metrics:
            result.gate = check_accuracy_drop(float_metrics, measured.metrics, budget, spec.name)
            if self.opts.max_accuracy_drop is None:  # say whose budget it was
                result.gate = dataclasses.replace(result.gate, message=result.gate.message.replace(
                    "(--max-accuracy-drop)", "(the default budget for choosing among variants)"))
        if self.opts.max_accuracy_drop is None and measured.metrics:
            loose = check_accuracy_drop(float_metrics, measured.metrics, DEFAULT_RECOMMEND_BUDGET_PP,
                                        spec.name)
            if not loose.passed:
                self.warnings.append(
                    f"{spec.name} loses {loose.drop_pp:.1f} pp against the float model ({loose.measure}); "
                    "check the calibration data, or set --max-accuracy-drop to make this an error")
        if spec.mode == "int8" and source.kind != "tflite":
            self._debug_int8(result, source, calib_x, float_metrics, eval_x, eval_y, reference, sample)
        result.edgetpu = check_edgetpu(result.model_bytes).as_dict()
        if spec.pruned:
            result.xnnpack_sparse = check_xnnpack_sparse(result.model_bytes)
        self._done(f"variant:{spec.name}", t)
        return result

    def _debug_int8(self, result: VariantResult, source: Any, calib_x: np.ndarray,
                    float_metrics: dict[str, Any], eval_x: np.ndarray | None, eval_y: np.ndarray | None,
                    reference: np.ndarray | None, sample: np.ndarray) -> None:
        """Worst layers from TensorFlow's QuantizationDebugger; with --keep-float-layers auto,
        keep them in float until the gate passes."""
        from edgefleet.converter.quantization.debugger import keep_float_layers_until, layer_errors
        from edgefleet.converter.quantization.gate import check_accuracy_drop
        from edgefleet.converter.quantization.metrics import compare

        factory = source.tflite_converter
        io = self._io_dtype(result.spec) or "int8"
        rescue = (self.opts.keep_float_layers == "auto" and result.gate is not None
                  and not result.gate.passed and eval_x is not None and reference is not None)
        if rescue and io not in ("int8", "uint8"):
            result.notes.append("--keep-float-layers auto needs int8 or uint8 input/output")
            rescue = False
        if not rescue:
            result.worst_layers = [e.as_dict() for e in layer_errors(factory, calib_x, DEBUGGER_SAMPLES)[:5]]
            return
        budget = result.gate.max_drop_pp

        def evaluate(model_bytes: bytes) -> Any:
            outputs, _ = TFLiteModel(model_bytes).predict(eval_x)
            return check_accuracy_drop(float_metrics, compare(reference, outputs, eval_y, self.opts.top_k),
                                       budget, result.spec.name)

        kept = keep_float_layers_until(factory, calib_x, evaluate, io_dtype=io,
                                       max_layers=self.opts.max_float_layers, progress=self.say,
                                       samples=DEBUGGER_SAMPLES)
        # the debugger ran once: its ranking serves the report too
        result.worst_layers = [e.as_dict() for e in kept.layers[:5]]
        result.notes.append(kept.message)
        if kept.kept or kept.passed:
            result.model_bytes = kept.model
            result.kept_float_layers = list(kept.kept)
            result.measured = measure(kept.model, reference, eval_x, eval_y, sample, self.opts.top_k,
                                      self.opts.measure_latency)
            # the verdict on that very model is already in the history
            result.gate = next(gate for layers, gate in kept.history if layers == kept.kept)

    def _choose(self, results: list[VariantResult]) -> tuple[VariantResult, str]:
        if self.opts.pick:
            picked = [r for r in results if r.spec.name == VariantSpec.parse(self.opts.pick).name]
            if not picked:
                raise ConversionError(f"--pick {self.opts.pick}: not among the variants "
                                      f"{[r.spec.name for r in results]}")
            chosen = picked[0]
            if self.opts.max_accuracy_drop is not None and chosen.gate is not None and not chosen.gate.passed:
                from edgefleet.converter.quantization.gate import GateError

                raise GateError(chosen.gate)
            return chosen, f"{chosen.spec.name}: picked with --pick"
        if self.opts.max_accuracy_drop is not None and len(results) == 1 and results[0].gate is not None \
                and not results[0].gate.passed:
            from edgefleet.converter.quantization.gate import GateError

            raise GateError(results[0].gate)
        return recommend(results, self.target.allowed_modes, self.target.needs_edgetpu)

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
