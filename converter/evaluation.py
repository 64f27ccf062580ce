"""The float reference of a conversion, and the yardstick every variant is measured with.

Data comes in by input name (converter.data.load_inputs); the float reference is the
source's float32 TFLite model run with the device's runtime, so its outputs are named as
the variants made by the same converter name theirs. A variant whose names differ anyway
is compared in output order, with a warning. Which outputs hold class scores is decided
once, from the reference (converter.golden.class_score_outputs), and the labels `y` belong
to the first of them that fits their classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.converter.data import Dataset, Preprocess, load_inputs
from edgefleet.converter.errors import ConversionError
from edgefleet.converter.golden import class_score_outputs
from edgefleet.runtime import TFLiteModel
from edgefleet.tensors import Arrays, TensorSpec

Say = Callable[[str], None]
# Without evaluation data, whether an output holds probabilities is judged on this many
# calibration samples (the golden set needs to know which outputs are class scores)
CLASS_PROBE = 64


def load_data(source: Any, path: Path, what: str, preprocess: Preprocess | None) -> Dataset:
    """WHAT ("calibration", "evaluation") data for SOURCE's inputs, shapes checked."""
    specs = source.reference_model().inputs
    data = load_inputs(path, specs, preprocess)
    for spec in specs:
        got = tuple(data.inputs[spec.name].shape[1:])
        if got != tuple(spec.sample_shape):
            which = f"input {spec.name!r}" if len(specs) > 1 else "model"
            raise ConversionError(
                f"{what} data has samples of shape {got}, but the {which} takes {tuple(spec.sample_shape)}; "
                "preprocess the data to the model's input")
    return data


def aligned(reference: list[str], specs: list[TensorSpec], what: str) -> tuple[dict[str, str], str | None]:
    """Reference name -> the model's own name for WHAT ("inputs", "outputs"): by name where
    the names are the same, else in order, with a warning saying so."""
    names = [s.name for s in specs]
    if sorted(names) == sorted(reference):
        return {n: n for n in reference}, None
    if len(names) != len(reference):
        raise ConversionError(f"the model has {len(names)} {what} ({', '.join(names)}), the float "
                              f"model {len(reference)} ({', '.join(reference)})")
    note = (f"the variant names its {what} {names}, the float model {reference}: they are compared "
            "in the model's order")
    return dict(zip(reference, names, strict=True)), note


@dataclass
class Reference:
    """The float model's outputs on the evaluation data and what they say about each output."""

    model: TFLiteModel  # the float32 model, loaded
    calib: Dataset
    evaluation: Dataset | None
    outputs: Arrays | None  # float outputs on the evaluation inputs, by output name
    class_outputs: list[str]
    labelled: str | None  # the class-score output the labels belong to
    task: str | None
    top_k: int
    figures: dict[str, Any] = field(default_factory=dict)  # metrics.reference_figures; {} without data
    warnings: list[str] = field(default_factory=list)

    @property
    def pool(self) -> Arrays:
        """Inputs the golden set is chosen from: evaluation data, else calibration data."""
        return (self.evaluation or self.calib).inputs

    @property
    def sample(self) -> Arrays:
        """One sample per input, for latency."""
        return {n: a[:1] for n, a in self.pool.items()}

    def inputs_for(self, model: TFLiteModel, inputs: Arrays) -> tuple[Arrays, str | None]:
        names, note = aligned([s.name for s in self.model.inputs], model.inputs, "inputs")
        return {names[n]: a for n, a in inputs.items()}, note

    def outputs_of(self, model: TFLiteModel, inputs: Arrays) -> tuple[Arrays, list[str]]:
        """MODEL's outputs on INPUTS (by reference input name), by reference output name."""
        fed, note_in = self.inputs_for(model, inputs)
        outputs, _ = model.run(fed)
        names, note_out = aligned([s.name for s in self.model.outputs], model.outputs, "outputs")
        return {n: outputs[names[n]] for n in names}, [n for n in (note_in, note_out) if n]

    def measure(self, model_bytes: bytes) -> tuple[dict[str, Any], list[str]]:
        """A variant's figures against the float model on the evaluation data, and warnings."""
        from edgefleet.converter.quantization.metrics import compare_outputs
        from edgefleet.converter.quantization.tasks import task_figures

        if self.evaluation is None or self.outputs is None:
            return {}, []
        outputs, notes = self.outputs_of(TFLiteModel(model_bytes), self.evaluation.inputs)
        metrics = compare_outputs(self.outputs, outputs, self.class_outputs, self.evaluation.labels,
                                  self.labelled, self.top_k)
        task = task_figures(self.task, self.outputs, outputs)
        if task is not None:
            metrics["task"] = task
        return metrics, notes


def make_reference(source: Any, calib: Dataset, evaluation: Dataset | None, task: str | None,
                   top_k: int) -> Reference:
    """The float reference: outputs on EVALUATION (class outputs from calibration data
    without it), the labels checked against the class-score outputs, constant outputs flagged."""
    from edgefleet.converter.quantization.metrics import reference_figures

    model = source.reference_model()
    data = evaluation if evaluation is not None else calib.head(CLASS_PROBE)
    outputs = source.reference(data.inputs)
    labels = evaluation.labels if evaluation is not None else None
    classes = int(labels.max()) + 1 if labels is not None and len(labels) else None
    class_outputs = class_score_outputs(model, outputs, classes, task)
    labelled = _labelled_output(model, class_outputs, labels)
    ref = Reference(model, calib, evaluation, outputs if evaluation is not None else None, class_outputs,
                    labelled, task, top_k)
    if labels is not None and labelled is None:
        ref.warnings.append("the evaluation data has labels (y), but no output holds class scores they "
                            "fit: the labels are not used")
    if evaluation is not None and labels is None and class_outputs:
        ref.warnings.append("evaluation data has no labels: accuracy is agreement with the float model's "
                            "top class, plus SNR and cosine similarity")
    if evaluation is not None:
        ref.figures = reference_figures(outputs, class_outputs, labels, labelled, top_k)
        for name, figures in ref.figures["outputs"].items():
            if figures["constant"]:
                ref.warnings.append(
                    f"the float model's output {name!r} is the same for every evaluation input: agreement "
                    "with it means nothing (check the evaluation data, or what the output holds)")
    return ref


def _labelled_output(model: TFLiteModel, class_outputs: list[str], labels: np.ndarray | None) -> str | None:
    """The first class-score output the labels fit; an error when they fit none of them."""
    if labels is None or not class_outputs:
        return None
    widths = {s.name: s.sample_shape[0] for s in model.outputs if s.name in class_outputs}
    low, high = int(labels.min()), int(labels.max())
    for name in class_outputs:
        if low >= 0 and high < widths[name]:
            return name
    width = max(widths.values())
    raise ConversionError(
        f"evaluation labels run from {low} to {high}, but the model has {width} outputs: labels must be "
        f"class indices 0..{width - 1}")


def range_warnings(source: Any, calib: Dataset, evaluation: Dataset | None) -> tuple[list[str], str]:
    """Calibration and evaluation data of other dtypes or ranges, or outside the range the
    model's first layers imply; and a note on what the model implies (or why nothing)."""
    from edgefleet.converter.data.ranges import check_expected, compare_data
    from edgefleet.converter.input_ranges import expected_input_ranges

    found = compare_data(calib, evaluation) if evaluation is not None else []
    expected, note = expected_input_ranges(source, source.reference_model().inputs)
    for data, what in ((calib, "calibration"), (evaluation, "evaluation")):
        if data is not None:
            found += check_expected(data, expected, what)
    return found, note


def golden_set(model: TFLiteModel, size: int, reference: Reference,
               max_samples: int) -> tuple[bytes, dict[str, Any]]:
    """golden.npz and the manifest's selftest section for MODEL (SIZE bytes), from the
    evaluation (else calibration) inputs, class-score outputs named as MODEL names them."""
    from edgefleet.converter.golden import build_golden, golden_budget

    pool, _ = reference.inputs_for(model, reference.pool)
    names, _ = aligned([s.name for s in reference.model.outputs], model.outputs, "outputs")
    class_outputs = [names[n] for n in reference.class_outputs]
    return build_golden(model, pool, class_outputs, golden_budget(size), max_samples=max_samples)


def load_all(source: Any, calib_path: Path, eval_path: str | Path | None, preprocess: Preprocess | None,
             say: Say) -> tuple[Dataset, Dataset | None, list[str], str]:
    """Calibration and evaluation data, the warnings they raise (ranges, missing labels or
    data) and the note on the input range the model implies."""
    say(f"loading calibration data {calib_path}")
    calib = load_data(source, calib_path, "calibration", preprocess)
    evaluation = None
    warnings = []
    if eval_path is not None:
        say(f"loading evaluation data {eval_path}")
        evaluation = load_data(source, Path(eval_path), "evaluation", preprocess)
    else:
        warnings.append("no evaluation data given: accuracy was not measured, so no accuracy gate could "
                        "apply")
    found, note = range_warnings(source, calib, evaluation)
    if note.startswith("not checked"):
        say(f"input range the model implies: {note}")
    return calib, evaluation, found + warnings, note
