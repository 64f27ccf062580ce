"""Quantisation: the modes (:mod:`.modes`) and their calibration samples (:mod:`.calibration`),
the accuracy gate (:mod:`.gate`) and its figures per output (:mod:`.metrics`, :mod:`.tasks`),
TensorFlow's QuantizationDebugger with keep-float layers (:mod:`.debugger`).

Named ``quantization`` rather than ``quantize`` so that ``edgefleet.converter.quantize``
stays the function: a sub-package of that name would replace it as an attribute of
``edgefleet.converter`` as soon as it is imported. Importing this package loads no
TensorFlow (the modes import it when they run).
"""

from __future__ import annotations

from edgefleet.converter.quantization.modes import MODES, QuantOptions, quantize

__all__ = ["MODES", "QuantOptions", "quantize"]
