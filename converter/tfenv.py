"""TensorFlow's process environment, set in one place before TensorFlow loads.

TensorFlow's C++ runtime reads TF_CPP_MIN_LOG_LEVEL once, when it starts, which is at the
first ``import tensorflow`` (``import keras`` and ``import tf_keras`` start it too); set
any later, it changes nothing and every conversion floods the terminal with INFO lines.
So every converter module that imports TensorFlow, Keras, tf-keras or tfmot imports this
module before them: as its first import when it imports them at module level (followed by
``# isort: split``), among its other imports when only its functions import them.
``setdefault``: a user's own setting wins.

tfmot's TF_USE_LEGACY_KERAS is another matter, handled where tfmot is imported
(:func:`edgefleet.converter.pruning.tfmot.tfmot`).
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def import_tensorflow() -> Any:
    """TensorFlow, imported on first use (this module has set its environment already)."""
    import tensorflow as tf

    return tf
