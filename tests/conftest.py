"""Fixtures shared by every test folder: a real Mosquitto, keys, topic prefixes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgefleet.protocol.signing import SigningKey, generate_keypair
from tests.support import Mosquitto, find_mosquitto


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


@dataclass(frozen=True)
class Keys:
    key: SigningKey
    private: Path  # the private key file, for the CLI's --key
    trust_dir: Path  # a folder holding only the matching public key


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys")
    private, public = generate_keypair(folder / "private")
    trust = folder / "trusted"
    trust.mkdir()
    (trust / public.name).write_bytes(public.read_bytes())
    return Keys(SigningKey.load(private), private, trust)


@pytest.fixture(scope="session")
def keypair(keys: Keys) -> tuple[SigningKey, Path]:
    """(signing key, trust folder holding its public key)."""
    return keys.key, keys.trust_dir


@dataclass(frozen=True)
class Digits:
    """The digits CNN trained once per session, its data files and its signed int8 bundle."""

    folder: Path
    model: Path
    calib: Path
    eval: Path
    bundle: Path


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Digits:
    from edgefleet.converter.build import convert
    from edgefleet.converter.digits import write_digits_files

    folder = tmp_path_factory.mktemp("digits")
    paths = write_digits_files(folder)
    bundle = folder / "digits-1.efb"
    convert(paths["model"], paths["calib"], bundle, keys.private, eval_path=paths["eval"],
            name="digits", version="1")
    return Digits(folder, Path(paths["model"]), Path(paths["calib"]), Path(paths["eval"]), bundle)
