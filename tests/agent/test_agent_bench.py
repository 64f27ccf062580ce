"""`edgefleet agent bench`: the figures litert-benchmark prints, plus memory, power and what the
delegate took, for a .tflite file or a bundle; clear errors for what it cannot run. (Whether
its p50 agrees with litert-benchmark's is a benchmark, benchmarks/agent_bench_vs_litert.py,
not a timed test.)"""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.support import run_cli

pytestmark = pytest.mark.slow


def test_a_bundle_is_benchmarked_with_every_figure_litert_benchmark_reports(tiny):
    proc = run_cli("agent", "bench", str(tiny.bundle), "--runs", "30", "--warmup", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    lat = result["latency"]
    assert set(lat) >= {"init_ms", "warmup_first_ms", "warmup_avg_ms", "avg_ms", "min_ms", "max_ms",
                        "median_ms", "std_ms", "p5_ms", "p95_ms"}
    assert lat["num_runs"] == 30 and lat["num_warmup_runs"] == 3
    assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p95_ms"] <= lat["max_ms"]
    assert result["runtime"]["api"] == "Interpreter" and result["num_threads"] == 1
    # LiteRT's XNNPACK takes 5 of the 10 ops; tflite-runtime 2.14 applies no delegate to int8
    expected = 5 if result["runtime"]["name"] == "ai-edge-litert" else 0
    assert result["delegate"]["delegated"]["ops_delegated"] == expected
    assert result["memory"]["rss_bytes"] > 0
    assert result["power"]["power_source"] is None or result["power"]["power_source"].startswith(
        ("measured:", "estimated:"))


def test_the_power_estimate_of_a_profile_is_labelled_and_the_text_follows_litert_benchmark(tiny):
    proc = run_cli("agent", "bench", str(tiny.tflite), "--runs", "20", "--profile", "rpi4")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for line in ("Model initialization:", "Warmup (first):", "Inference (median):", "Inference (p95):"):
        assert line in text
    assert "(estimated:rpi4)" in text and "mJ per inference" in text


def test_what_it_cannot_run_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model at all")
    proc = run_cli("agent", "bench", str(broken))
    assert proc.returncode == 1 and "broken.tflite" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("agent", "bench", str(broken), "--profile", "no-such-board")
    assert proc.returncode == 2 and "not a board profile" in proc.stderr


def test_the_compiled_model_api_is_timed_as_litert_benchmark_times_it(tiny):
    proc = run_cli("agent", "bench", str(tiny.tflite), "--runs", "20", "--api", "compiled", "--json")
    if importlib.util.find_spec("ai_edge_litert") is None:  # the legacy environment: tflite-runtime
        assert proc.returncode == 1 and "--api compiled needs ai-edge-litert" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["runtime"]["api"] == "CompiledModel" and result["latency"]["num_runs"] == 20
    assert result["delegate"]["fully_accelerated"] is False  # XNNPACK leaves five ops, as above
    proc = run_cli("agent", "bench", str(tiny.tflite), "--api", "compiled", "--delegate", "edgetpu")
    assert proc.returncode == 1 and "CPU accelerator only" in proc.stderr
