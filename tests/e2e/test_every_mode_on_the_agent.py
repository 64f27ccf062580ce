"""Bundles of every quantisation mode pass their self-test on the agent and answer like
the float model (the foundation's end-to-end test covers int8)."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.protocol.topics import Topics
from tests.support import AgentProcess, Watcher, http_infer, is_active, npy_bytes, publish_cli, top1

pytestmark = pytest.mark.slow


def test_float16_dynamic_and_16x8_bundles_activate_and_agree_with_float(tmp_path, broker, prefix, keys,
                                                                        digits):
    import keras

    from edgefleet.converter.build import convert

    data = np.load(digits.eval)
    x = data["x"]
    float_top1 = keras.models.load_model(digits.model).predict(x, verbose=0).argmax(-1)
    topics = Topics(prefix)
    watcher = Watcher(broker.address, [topics.reported("pi-modes")])
    agent = AgentProcess(tmp_path, "pi-modes", broker.address, prefix, keys.trust_dir).start()
    try:
        for version, mode in enumerate(("float16", "dynamic", "int16x8"), start=2):
            out = tmp_path / f"{mode}.efb"
            convert(digits.model, digits.calib, out, keys.private, eval_path=digits.eval, name="digits",
                    version=str(version), mode=mode, measure_latency=False, chart=False)
            pub = publish_cli(out, broker.address, prefix, keys.private, "--device", "pi-modes")
            reported = watcher.wait_for(topics.reported("pi-modes"), is_active(pub["bundle_id"]), 60)
            assert reported["active"]["selftest"]["passed"], reported
            status, answer = http_infer(agent.http_port, npy_bytes(x))
            assert status == 200 and answer["bundle_id"] == pub["bundle_id"]
            assert np.mean(np.array(top1(answer)) == float_top1) >= 0.97, mode
    finally:
        code = agent.stop()
        watcher.close()
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()
