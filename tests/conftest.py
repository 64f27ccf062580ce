"""Fixtures shared by every test folder: a real Mosquitto, the test-only keys, the committed
tiny bundle, the digits CNN trained once per session, topic prefixes; and the hooks of the
TensorFlow guard (tests/tensorflow_guard.py: a test not marked `slow` never imports it).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgefleet.protocol.signing import SigningKey
from tests import tensorflow_guard
from tests.support import FIXTURES, Keys, Mosquitto, find_mosquitto

TEST_KEY = FIXTURES / "test-only-never-trust.key"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A private Mosquitto on a free loopback port (the embedded broker only where
    Mosquitto is not installed and EDGEFLEET_REQUIRE_MOSQUITTO is not set)."""
    binary = find_mosquitto()
    if binary:
        mosq = Mosquitto(binary, tmp_path_factory.mktemp("mosquitto")).start()
        yield mosq
        mosq.stop()
        return
    if os.environ.get("EDGEFLEET_REQUIRE_MOSQUITTO") == "1":
        pytest.fail("mosquitto is not installed and EDGEFLEET_REQUIRE_MOSQUITTO=1")
    from edgefleet.fleet.broker import EmbeddedBroker

    print("\nnote: mosquitto not found; these tests use the embedded amqtt broker instead")
    embedded = EmbeddedBroker().start()
    yield embedded
    embedded.stop()


@pytest.fixture
def prefix() -> str:
    """A fresh base topic per test, so tests sharing one broker never see each other."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """The committed test-only key pair, which signs the tiny bundle (never trusted by a real agent)."""
    folder = tmp_path_factory.mktemp("keys")
    private = folder / TEST_KEY.name
    private.write_bytes(TEST_KEY.read_bytes())
    private.chmod(0o600)  # as `edgefleet keys generate` leaves it; git keeps only 0644
    trust = folder / "trusted"
    trust.mkdir()
    shutil.copy(TEST_KEY.with_suffix(".pub"), trust)
    return Keys(SigningKey.load(private), private, trust)


@dataclass(frozen=True)
class Tiny:
    """The committed tiny int8 digits model (tests/fixtures/README.md): no TensorFlow needed."""

    bundle: Path  # signed by `keys`
    tflite: Path  # the bundle's model.tflite
    eval: Path  # 100 held-out samples: x float32 (100, 8, 8, 1), y int64
    x: np.ndarray
    y: np.ndarray


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    # copies, so that no test can change the committed files
    folder = tmp_path_factory.mktemp("tiny")
    paths = [Path(shutil.copy(FIXTURES / name, folder))
             for name in ("tiny-digits.efb", "tiny-digits.tflite", "tiny-digits-eval.npz")]
    with np.load(paths[2]) as data:
        x, y = data["x"], data["y"]
    return Tiny(*paths, x, y)


def _need_tensorflow(what: str) -> None:
    if importlib.util.find_spec("tensorflow") is None:
        pytest.fail(f"{what} trains a model and needs TensorFlow (edgefleet[converter]), which this "
                    "environment lacks; a test that runs without it uses the committed `tiny` fixture")


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """model.keras, calib.npz, eval.npz and train.npz of the demo CNN, trained once per session."""
    _need_tensorflow("the digits_files fixture")
    from edgefleet.converter.digits import write_digits_files

    return write_digits_files(tmp_path_factory.mktemp("digits"), seed=0)


@dataclass(frozen=True)
class Digits:
    """The digits CNN trained once per session, its data files and its signed int8 bundle."""

    folder: Path
    model: Path
    calib: Path
    eval: Path
    bundle: Path


@pytest.fixture(scope="session")
def digits(digits_files: dict[str, Path], keys: Keys) -> Digits:
    _need_tensorflow("the digits fixture")
    from edgefleet.converter import convert

    folder = digits_files["model"].parent
    bundle = folder / "digits-1.efb"
    convert(digits_files["model"], digits_files["calib"], bundle, keys.private,
            eval_path=digits_files["eval"], name="digits", version="1")
    return Digits(folder, digits_files["model"], digits_files["calib"], digits_files["eval"], bundle)


def pytest_configure(config: pytest.Config) -> None:
    tensorflow_guard.configure(config)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    return tensorflow_guard.ignore_collect(collection_path, config)
