"""The foundation's promise, end to end against a real Mosquitto: a Keras model is
converted, published, fetched by an agent in its own process, verified, self-tested,
activated, asked over HTTP and MQTT, and reported on by the monitor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgefleet.fleet.connection import close, connect
from edgefleet.fleet.infer_client import MqttInferClient
from edgefleet.protocol.topics import Topics
from tests.support import AgentProcess, Watcher, http_infer, is_active, npy_bytes, publish_cli, run_cli, top1

pytestmark = pytest.mark.slow


def test_keras_model_reaches_device_and_answers_like_float_model(tmp_path, broker, prefix, keys, digits):
    import keras

    topics = Topics(prefix)
    device = "pi-e2e"
    watcher = Watcher(broker.address, [topics.reported(device), topics.status(device)])
    agent = AgentProcess(tmp_path, device, broker.address, prefix, keys.trust_dir).start()
    try:
        watcher.wait_for(topics.status(device), lambda s: s["state"] == "online", 30)
        published = publish_cli(digits.bundle, broker.address, prefix, keys.private, "--device", device)
        reported = watcher.wait_for(topics.reported(device), is_active(published["bundle_id"]), 60)
        assert reported["active"]["selftest"]["passed"] is True
        assert reported["active"]["runtime"]["name"] in ("ai-edge-litert", "tflite-runtime")

        data = np.load(digits.eval)
        x, y = data["x"], data["y"]
        float_top1 = keras.models.load_model(digits.model).predict(x, verbose=0).argmax(-1)

        status, answer = http_infer(agent.http_port, npy_bytes(x))
        assert status == 200, answer
        http_top1 = np.array(top1(answer))
        assert answer["bundle_id"] == published["bundle_id"]

        client = connect(broker.address, "test")
        try:
            mqtt_client = MqttInferClient(client, topics, device)
            mqtt_top1 = np.concatenate([top1(mqtt_client.infer(x[i:i + 60])) for i in range(0, len(x), 60)])
        finally:
            close(client)

        np.save(tmp_path / "five.npy", x[:5])
        cli = run_cli("infer", str(tmp_path / "five.npy"), "--device", device, "--broker", broker.address,
                      "--prefix", prefix, "--json")
        assert cli.returncode == 0, cli.stderr
        assert top1(json.loads(cli.stdout)) == http_top1[:5].tolist()

        assert len(x) >= 300
        assert np.mean(http_top1 == float_top1) >= 0.97
        assert np.mean(mqtt_top1 == float_top1) >= 0.97
        assert np.array_equal(http_top1, mqtt_top1)  # one model, one answer, whatever the path
        assert np.mean(http_top1 == y) >= 0.95

        snap = run_cli("monitor", "--once", "--json", "--broker", broker.address, "--prefix", prefix,
                       "--wait", "15")
        assert snap.returncode == 0, snap.stderr
        rows = {r["device_id"]: r for r in json.loads(snap.stdout)["devices"]}
        row = rows[device]
        assert row["status"] == "online"
        assert row["inference_count"] > 0
        assert row["latency_p50_ms"] is not None and row["latency_p50_ms"] > 0
        assert row["rss_bytes"] > 0
        assert row["bundle_id"] == published["bundle_id"]
    finally:
        code = agent.stop()
        log = agent.log_text()
    assert code == 0, log
    assert watcher.wait_for(topics.status(device), lambda s: s["state"] == "stopped", 10)
    watcher.close()
    assert "Traceback" not in log, log
