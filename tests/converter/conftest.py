"""Shared fixtures: one trained digits model, written to files, and one converted bundle.

TensorFlow is imported inside the fixtures, not at collection time, so that collecting
the whole test tree stays TensorFlow-free (the agent must never import it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet.protocol.signing import generate_keypair


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """model.keras, calib.npz and eval.npz of the demo CNN, trained once per test run."""
    pytest.importorskip("tensorflow")
    from edgefleet.converter.digits import write_digits_files

    return write_digits_files(tmp_path_factory.mktemp("digits"), seed=0)


@pytest.fixture(scope="session")
def session_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    private, public = generate_keypair(folder)
    return {"private": private, "public": public, "folder": folder}


@pytest.fixture(scope="session")
def converted(
    digits_files: dict[str, Path], session_keys: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The digits model converted with eval data; also the progress lines it printed."""
    from edgefleet.converter.build import convert

    messages: list[str] = []
    result = convert(
        digits_files["model"], digits_files["calib"],
        tmp_path_factory.mktemp("out") / "digits.efb", session_keys["private"],
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
