"""Shared fixtures: one converted bundle of the digits model, and the self-test rule.

TensorFlow is imported inside the fixtures, not at collection time, so that collecting
the whole test tree stays TensorFlow-free (the agent must never import it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import Keys

# digits_files (the demo CNN trained once per session) and keys live in tests/conftest.py


@pytest.fixture(scope="session")
def converted(
    digits_files: dict[str, Path], keys: Keys,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The digits model converted with eval data; also the progress lines it printed."""
    from edgefleet.converter.build import convert

    messages: list[str] = []
    result = convert(
        digits_files["model"], digits_files["calib"],
        tmp_path_factory.mktemp("out") / "digits.efb", keys.private,
        eval_path=digits_files["eval"], progress=messages.append,
    )
    return {"result": result, "messages": messages}


def _selftest_passes(outputs: np.ndarray, golden: Any, selftest: dict[str, Any]) -> bool:
    reference = golden["reference_outputs"]
    agreement = np.mean(outputs.argmax(axis=1) == reference.argmax(axis=1))
    mean_abs_error = np.mean(np.abs(outputs - reference))
    return bool(agreement >= selftest["min_top1_agreement"]
                and mean_abs_error <= selftest["max_mean_abs_error"])


@pytest.fixture(scope="session")
def selftest_passes() -> Callable[[np.ndarray, Any, dict[str, Any]], bool]:
    """The device's self-test rule as the manifest states it: fn(outputs, golden, selftest)."""
    return _selftest_passes
