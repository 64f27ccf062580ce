"""The guard that keeps light tests light (registered by tests/conftest.py).

A test not marked `slow` must not import TensorFlow: it would not run on a board, where
only edgefleet[device] is installed, and `pytest -m "not slow"` must never load it.
Under EDGEFLEET_LIGHT=1 (the device-only run of scripts/test) the session refuses to
start where TensorFlow is importable at all, and a skipped test fails (it would run
nowhere else).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization")

_HEAVY_BEFORE = pytest.StashKey[frozenset[str]]()
_HEAVY_AT_COLLECTION = pytest.StashKey[str]()


def _heavy_loaded() -> frozenset[str]:
    return frozenset(name for name in HEAVY if name in sys.modules)


def configure(config: pytest.Config) -> None:
    if os.environ.get("EDGEFLEET_LIGHT") == "1":
        found = [name for name in HEAVY if importlib.util.find_spec(name) is not None]
        if found:
            raise pytest.UsageError(
                f"EDGEFLEET_LIGHT=1, but {', '.join(found)} can be imported from {sys.prefix}: the "
                "device-only environment must hold edgefleet[device,fleet] and pytest, nothing heavier")
    # a plugin, not conftest hooks: those would miss session fixtures and the root collector
    config.pluginmanager.register(TensorFlowGuard(), "edgefleet-tensorflow-guard")
    if os.environ.get("EDGEFLEET_LIGHT") == "1":
        config.pluginmanager.register(NoSkipsInTheLightRun(), "edgefleet-no-skips-in-the-light-run")


def _wholly_slow(path: Path) -> bool:
    """Does the test module say `pytestmark = pytest.mark.slow` at its top level?"""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return False  # let pytest import it and report the problem
    return any(isinstance(node, ast.Assign) and len(node.targets) == 1
               and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "pytestmark"
               and ast.unparse(node.value) == "pytest.mark.slow" for node in tree.body)


def ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under -m "not slow", a module marked slow as a whole is not imported: none of its tests
    would run, and importing it may load TensorFlow (test_pruning.py imports Keras at the top).
    pytest still imports a module named on its command line."""
    if (" ".join(config.getoption("markexpr").split()) == "not slow"
            and collection_path.name.startswith("test_") and collection_path.suffix == ".py"
            and _wholly_slow(collection_path)):
        return True
    return None


def _under(nodeid: str, parent: str) -> bool:
    return parent in ("", ".") or nodeid == parent or nodeid.startswith((f"{parent}/", f"{parent}::"))


class TensorFlowGuard:
    """Fails a test not marked slow that imports TensorFlow: itself, through a fixture, or
    through its module at collection. Once TensorFlow is loaded (by a slow test, say), a
    later import cannot be seen; under -m "not slow" nothing loads it first."""

    def __init__(self) -> None:
        self.at_start = _heavy_loaded()  # loaded by a plugin or conftest already
        self.collectors: list[str] = []  # node ids whose collection imported TensorFlow
        self.fixtures: set[str] = set()  # fixtures whose setup imported TensorFlow

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Generator[None, Any, Any]:
        before = _heavy_loaded()
        report = yield
        if not _heavy_loaded() - before:
            return report
        if isinstance(collector, pytest.Module) and not _wholly_slow(collector.path):
            # even -m "not slow" would import it: refuse the module rather than its tests
            report.outcome, report.result = "failed", []
            report.longrepr = (f"{collector.nodeid} imports TensorFlow when it is collected, so even "
                               "`pytest -m 'not slow'` would load it: import it inside the tests that "
                               "need it, or mark the whole module slow (pytestmark = pytest.mark.slow)")
        self.collectors.append(collector.nodeid)
        return report

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            if item.get_closest_marker("slow"):
                continue
            if self.at_start:
                item.stash[_HEAVY_AT_COLLECTION] = "it was loaded before collection, by a plugin or conftest"
                continue
            for parent in self.collectors:
                if _under(item.nodeid, parent):
                    item.stash[_HEAVY_AT_COLLECTION] = f"collecting {parent or 'the test tree'} imports it"
                    break

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[object]) -> Generator[None, Any, Any]:
        before = _heavy_loaded()
        try:
            return (yield)
        finally:
            if _heavy_loaded() - before:
                self.fixtures.add(fixturedef.argname)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, Any, Any]:
        item.stash[_HEAVY_BEFORE] = _heavy_loaded()
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, Any]:
        try:
            return (yield)
        finally:
            self._fail_if_heavy(item)

    def _fail_if_heavy(self, item: pytest.Item) -> None:
        if item.get_closest_marker("slow"):
            return
        how = item.stash.get(_HEAVY_AT_COLLECTION, "")
        fixtures = sorted(self.fixtures.intersection(getattr(item, "fixturenames", ())))
        new = sorted(_heavy_loaded() - item.stash[_HEAVY_BEFORE])
        if not how and fixtures:
            how = f"through the fixture(s) {', '.join(fixtures)}"
        if not how and new:
            how = f"it loaded {', '.join(new)}"
        if how:
            pytest.fail(f"{item.nodeid} is not marked slow but imports TensorFlow ({how}): mark it "
                        "@pytest.mark.slow or stop importing TensorFlow (the `tiny` fixture needs none); "
                        "tests not marked slow must also run where only edgefleet[device] is installed",
                        pytrace=False)


class NoSkipsInTheLightRun:
    """scripts/test sends these folders to the device-only run alone: a test skipped there
    (say, for want of TensorFlow) would run nowhere, so a skip fails instead."""

    @staticmethod
    def _fail(report: Any, nodeid: str) -> None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"{nodeid} was skipped in the device-only run ({reason}), and scripts/test "
                           "runs it nowhere else: make it run without TensorFlow, or move it to a "
                           "folder the dev run covers (tests/converter, tests/e2e)")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item) -> Generator[None, Any, Any]:
        report = yield
        if report.skipped and not hasattr(report, "wasxfail"):
            self._fail(report, item.nodeid)
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Generator[None, Any, Any]:
        report = yield
        if report.skipped:  # a module-level skip
            self._fail(report, collector.nodeid)
        return report
