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


def _selftest_passes(outputs: dict[str, np.ndarray], golden_set: Any) -> bool:
    """Every output within its tolerance, and the class-score outputs' top class agreeing on
    at least min_top1_agreement of the samples (edgefleet.protocol.golden.compare)."""
    from edgefleet.protocol import golden

    return all(r.passed for r in golden.compare(golden_set, outputs))


@pytest.fixture(scope="session")
def selftest_passes() -> Callable[[dict[str, np.ndarray], Any], bool]:
    """The device's self-test rule as the manifest states it: fn(outputs by name, golden set
    decoded with the manifest's selftest section)."""
    return _selftest_passes
