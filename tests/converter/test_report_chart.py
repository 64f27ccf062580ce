"""The .report.png chart, checked on the matplotlib figure drawn from real conversion
reports (its artists and texts, not its pixels)."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from tests.support import Keys

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("needs the converter extra (TensorFlow)", allow_module_level=True)

pytestmark = pytest.mark.slow


def _texts(ax: Any) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_chart_shows_values_the_chosen_and_failed_variants_and_a_cut_accuracy_axis(
        converted: dict[str, Any], tmp_path: Path) -> None:
    from edgefleet.converter.report import chart_figure, render_chart

    report = copy.deepcopy(converted["result"].report)
    # the one figure a fresh conversion of the digits CNN lacks: a variant that failed
    report["failed_variants"] = [{"name": "int16x8", "error": "LiteRT refused it"}]
    size, accuracy, latency = chart_figure(report).axes
    labels = [t.get_text() for t in size.get_xticklabels()]
    chosen = report["chosen"]
    assert labels == ["float32 (reference)", *[f"{v['name']} (chosen)" if v["name"] == chosen else v["name"]
                                               for v in report["variants"]], "int16x8 (failed)"]
    bold = [t.get_text() for t in size.get_xticklabels() if t.get_fontweight() == "bold"]
    assert bold == [f"{chosen} (chosen)"]
    rows = [report["float"], *report["variants"]]
    for ax in (size, accuracy, latency):
        assert "failed" in _texts(ax)  # at the failed variant's place, in every panel
    # a value on every bar: the file and compressed sizes, the accuracy, both latencies
    assert [f"{r['size_bytes'] / 1024:.1f}" for r in rows] == _texts(size)[: len(rows)]
    assert [f"{100 * r['metrics']['top1']:.1f}" for r in rows] == _texts(accuracy)[: len(rows)]
    assert [f"{r['latency_p50_ms']['1']:.3f}" for r in rows] == _texts(latency)[: len(rows)]
    low = accuracy.get_ylim()[0]
    assert low > 0 and f"axis starts at {low:g} %" in accuracy.get_ylabel()  # the digits: all above 90 %
    render_chart(report, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chart_says_not_measured_where_nothing_was(digits_files: dict[str, Path], keys: Keys,
                                                   tmp_path: Path) -> None:
    from edgefleet.converter.build import convert
    from edgefleet.converter.report import chart_figure

    # no --eval and --no-latency: two of the three panels have nothing to show
    result = convert(digits_files["model"], digits_files["calib"], tmp_path / "b.efb", keys.private,
                     mode="int8", measure_latency=False, chart=False)
    size, accuracy, latency = chart_figure(result.report).axes
    assert any(t.startswith("not measured") and "--eval" in t for t in _texts(accuracy)), _texts(accuracy)
    assert any(t.startswith("not measured") and "--no-latency" in t for t in _texts(latency))
    assert not any(t.startswith("not measured") for t in _texts(size))
    assert not accuracy.patches and not latency.patches  # no zero-height bars pretending a value
