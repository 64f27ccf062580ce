"""Telemetry belongs to the model that served it: after a swap the new model's counts,
errors and latency start from zero (before, the previous model's requests and their p99
were shown under the new model's name)."""

from __future__ import annotations

import pytest

from edgefleet.protocol.histogram import Histogram
from edgefleet.protocol.topics import Topics
from tests.agent.test_bad_input_keeps_old_model import rebuild
from tests.support import AgentProcess, Watcher, http_infer, is_active, npy_bytes, publish_cli

pytestmark = pytest.mark.slow
DEVICE = "pi-tel"


def _telemetry_of(watcher: Watcher, topics: Topics, bundle_id: str, count: int, errors: int = 0) -> dict:
    """The first telemetry of BUNDLE_ID that counts COUNT requests and ERRORS failed ones (one
    sent between two requests shows only the first: waiting on the count alone was a race)."""
    return watcher.wait_for(
        topics.telemetry(DEVICE),
        lambda t: (t.get("model") or {}).get("bundle_id") == bundle_id
        and t["inference"]["count_total"] == count and t["inference"]["errors_total"] >= errors, 30)


def test_after_a_swap_the_new_model_s_figures_start_from_zero(tmp_path, broker, prefix, keys, tiny):
    topics = Topics(prefix)
    watcher = Watcher(broker.address, [topics.reported(DEVICE), topics.telemetry(DEVICE)])
    agent = AgentProcess(tmp_path, DEVICE, broker.address, prefix, keys.trust_dir).start()
    try:
        v1 = publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--device", DEVICE)["bundle_id"]
        watcher.wait_for(topics.reported(DEVICE), is_active(v1), 60)
        status, _ = http_infer(agent.http_port, npy_bytes(tiny.x[:29]))
        assert status == 200
        status, _ = http_infer(agent.http_port, npy_bytes(tiny.x[:2, :4]))  # does not fit the input
        assert status == 400
        first = _telemetry_of(watcher, topics, v1, 29, errors=1)
        old = first["inference"]
        # no silent fallback: what XNNPACK took is in telemetry (and in reported's active.delegate)
        assert first["delegate"]["delegated"]["left_to_runtime_kernels"]["SOFTMAX"] == 1
        assert old["errors_by_kind"]["input"] == 1 and old["errors_total"] == 1
        assert old["latency_samples"] == 29 and old["latency_p99_ms"] > 0
        histogram = Histogram.from_dict(old["latency_histogram"])
        assert histogram.count == 29
        assert histogram.max_s * 1000 == pytest.approx(old["latency_max_ms"], abs=1e-3)
        assert old["cold_start"]["load_ms"] > 0 and old["cold_start"]["first_inference_ms"] > 0

        v2 = publish_cli(rebuild(tiny.bundle, tmp_path / "v2.efb", keys, "2"), broker.address, prefix,
                         keys.private, "--device", DEVICE)["bundle_id"]
        watcher.wait_for(topics.reported(DEVICE), is_active(v2), 60)
        new = _telemetry_of(watcher, topics, v2, 0)["inference"]
        assert new["errors_total"] == 0 and new["latency_samples"] == 0 and new["latency_p99_ms"] is None
        assert new["latency_histogram"]["count"] == 0 and new["latency_histogram"]["buckets"] == []
        status, _ = http_infer(agent.http_port, npy_bytes(tiny.x[:3]))
        assert status == 200
        assert _telemetry_of(watcher, topics, v2, 3)["inference"]["latency_samples"] == 3
    finally:
        code = agent.stop()
        watcher.close()
    assert code == 0, agent.log_text()
