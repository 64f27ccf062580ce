"""Knowledge distillation of Keras 3 models into a smaller student: the training loop
(:mod:`.training`), the teacher and student models (:mod:`.models`), and ``edgefleet
distill`` on files (:mod:`.files`).

Importing this package loads Keras and TensorFlow.
"""

from __future__ import annotations

from edgefleet.converter.distillation.files import distill_files
from edgefleet.converter.distillation.models import scaled_student
from edgefleet.converter.distillation.training import DistillOptions, DistillResult, distill

__all__ = ["DistillOptions", "DistillResult", "distill", "distill_files", "scaled_student"]
