"""What `convert` checks before any work, and before TensorFlow loads (about 5 s by itself):
that the model file is a model, that --out may be written, that the board profile's
choices fit the source, and that a pruning plan can run on the --train data.

NumPy and the standard library only. :class:`converter.build._Conversion` calls
:func:`early_checks` last in its constructor.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgefleet.converter.artifacts import check_out_path
from edgefleet.converter.data import Preprocess, load_dataset
from edgefleet.converter.errors import ConversionError
from edgefleet.converter.pruning.plan import PruneOptions, check_plan
from edgefleet.converter.targets.profile import Target
from edgefleet.file_kinds import CONVERT_INPUTS, DESCRIPTIONS, MODEL_KINDS, identify
from edgefleet.protocol.desired import check_version

if TYPE_CHECKING:
    from edgefleet.converter.build import ConvertOptions
    from edgefleet.converter.variants import VariantSpec

# the kind a model file's name promises (converter.sources picks its loader by the suffix)
_SUFFIX_KIND = {".keras": "keras", ".h5": "h5", ".hdf5": "h5", ".tflite": "tflite"}
_KIND_SUFFIX = {"keras": ".keras", "h5": ".h5", "tflite": ".tflite"}
TrainingData = tuple[np.ndarray, np.ndarray]


def early_checks(model_path: Path, out_path: Path, opts: ConvertOptions, target: Target,
                 specs: list[VariantSpec], preprocess: Preprocess | None) -> TrainingData | None:
    """Raise ConversionError for the first problem; return the checked training data of
    pruned variants (None without them), loaded once here for the pruning step."""
    kind = check_model_file(model_path)
    check_bundle_version(str(opts.version))
    check_out_path(model_path, out_path, force=opts.force)
    check_io_choice(kind, target, opts.io_dtype, specs)
    if not any(s.pruned for s in specs):
        return None
    return check_pruning_plan(kind, opts, preprocess)


def check_bundle_version(version: str) -> None:
    """Devices order versions to refuse downgrades, so a bundle's is PEP 440 (1, 1.2, 2.0rc1)."""
    try:
        check_version(version)
    except ValueError as exc:
        raise ConversionError(f"--version: {exc}") from None


def check_model_file(path: Path) -> str:
    """The model's kind (file_kinds), or a ConversionError saying what the file is instead."""
    kind = identify(path)
    if kind == "missing":
        raise ConversionError(f"model {path} does not exist; accepted: {CONVERT_INPUTS}")
    if kind == "bundle":
        raise ConversionError(f"{path} is an edgefleet bundle, not a model: it was converted already "
                              "(edgefleet inspect shows what it holds); give the model it was made from")
    if kind not in MODEL_KINDS:
        extra = " without saved_model.pb, so not a SavedModel" if kind == "folder" else ""
        raise ConversionError(f"{path} is not a model edgefleet can convert: it is {DESCRIPTIONS[kind]}"
                              f"{extra}; accepted: {CONVERT_INPUTS}")
    promised = "saved_model" if path.is_dir() else _SUFFIX_KIND.get(path.suffix.lower())
    if promised != kind:
        named = f"its name ends in {path.suffix or '(nothing)'}"
        rename = f": rename it to *{_KIND_SUFFIX[kind]}" if kind in _KIND_SUFFIX else ""
        raise ConversionError(f"{path} is not the model its name says ({named}): it is "
                              f"{DESCRIPTIONS[kind]}{rename}; accepted: {CONVERT_INPUTS}")
    return kind


def check_io_choice(kind: str, target: Target, io_dtype: str | None, specs: list[VariantSpec]) -> None:
    """A setting the profile made and the source cannot take is the profile's, not the user's."""
    if kind != "tflite" or io_dtype is not None or target.io_dtype == "int8":
        return
    if any(s.mode == "int8" for s in specs):
        raise ConversionError(
            f"the {target.name} profile chooses {target.io_dtype} input/output for int8 variants, but a "
            ".tflite source is quantised with ai-edge-quantizer, which makes int8 input/output only: "
            "give --io-type int8 to convert this file with int8 input and output, or convert the "
            f"Keras/SavedModel original to keep the profile's {target.io_dtype}")


def check_pruning_plan(kind: str, opts: ConvertOptions, preprocess: Preprocess | None) -> TrainingData:
    if kind not in ("keras", "h5"):
        raise ConversionError(f"pruning fine-tunes the model, which needs a Keras model (.keras or "
                              f".h5); {DESCRIPTIONS[kind]} cannot be fine-tuned")
    if opts.train_path is None:
        raise ConversionError("pruned variants fine-tune the model: give --train data (.npz with x, y)")
    x, y = load_dataset(opts.train_path, preprocess)
    # a .keras file is always Keras 3; an .h5 may load as either, so prune() checks it again
    return check_plan(x, y, prune_options(opts), "keras3" if kind == "keras" else None)


def prune_options(opts: ConvertOptions) -> PruneOptions:
    """The pruning options of a conversion."""
    return PruneOptions(target_sparsity=opts.prune_sparsity, epochs=opts.prune_epochs,
                        m_by_n=opts.prune_m_by_n, xnnpack_policy=opts.prune_xnnpack_policy)
