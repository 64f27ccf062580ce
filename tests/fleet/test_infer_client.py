"""The MQTT inference client against a real agent serving the committed int8 model:
arrays arrive with their own dtype, and a device that never answers is a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.fleet.connection import close, connect
from edgefleet.fleet.infer_client import InferenceFailed, MqttInferClient
from edgefleet.protocol.bundle import open_bundle
from edgefleet.protocol.signing import TrustStore
from edgefleet.protocol.topics import Topics
from edgefleet.runtime import TFLiteModel
from tests.support import AgentProcess, Watcher, is_active, publish_cli

pytestmark = pytest.mark.slow


def test_an_array_of_the_models_input_type_reaches_it_unchanged(tmp_path, broker, prefix, keys, tiny):
    topics = Topics(prefix)
    agent = AgentProcess(tmp_path, "pi-dtype", broker.address, prefix, keys.trust_dir)
    watcher = Watcher(broker.address, [topics.reported("pi-dtype")])
    client = connect(broker.address, "test")
    try:
        agent.start()
        published = publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--device", "pi-dtype")
        watcher.wait_for(topics.reported("pi-dtype"), is_active(published["bundle_id"]), 60)
        spec = TFLiteModel(open_bundle(tiny.bundle.read_bytes(),
                                       TrustStore.from_folder(keys.trust_dir)).model_bytes).inputs[0]
        assert spec.dtype == "int8" and spec.scale > 0
        x = tiny.x[:8]
        quantised = np.clip(np.round(x / spec.scale + spec.zero_point), -128, 127).astype(np.int8)
        infer = MqttInferClient(client, topics, "pi-dtype")
        from_floats = infer.infer(x)
        from_int8 = infer.infer(quantised)  # the tensor as the model takes it, not real values
        assert from_int8["outputs"] == from_floats["outputs"]
        # int8 values read as real numbers would saturate the input: the answers would differ
        as_reals = infer.infer(quantised.astype(np.float32))
        assert as_reals["outputs"] != from_floats["outputs"]
    finally:
        close(client)
        agent.stop()
        watcher.close()
    assert "Traceback" not in agent.log_text(), agent.log_text()


def test_a_device_that_never_answers_is_a_clear_error(broker, prefix):
    client = connect(broker.address, "test")
    try:
        with pytest.raises(InferenceFailed, match=r"no answer from device nobody-home within 0\.3 s"):
            MqttInferClient(client, Topics(prefix), "nobody-home").infer(np.zeros((1, 8, 8, 1)), timeout=0.3)
    finally:
        close(client)
