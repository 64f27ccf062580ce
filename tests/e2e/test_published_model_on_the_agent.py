"""A model other people trained and published, with two outputs, from `edgefleet pack` to
answers: MediaPipe's palm detector (boxes and scores) bundled as it is, self-tested on
both outputs, served over HTTP and MQTT bit-exact with LiteRT, and a variant that breaks
the second output refused at the self-test while the first keeps serving."""

from __future__ import annotations

import io
import json
import urllib.request

import numpy as np
import pytest

from edgefleet.fleet.connection import close, connect
from edgefleet.fleet.infer_client import MqttInferClient
from edgefleet.protocol.bundle import open_bundle, write_bundle
from edgefleet.protocol.signing import TrustStore
from edgefleet.protocol.topics import Topics
from edgefleet.runtime import TFLiteModel
from tests.published_models import INPUT_RANGE, mediapipe_model, photo_batch
from tests.support import AgentProcess, Watcher, is_active, publish_cli, run_cli

pytestmark = pytest.mark.slow
MODEL = "palm_detection_lite"
DEVICE = "pi-palm"


def _break_second_output(data: bytes) -> bytes:
    """The same detector with its scores head's biases moved by +4: the boxes (the first
    output) come out as before, every score (the second) differs."""
    import numpy as np

    from edgefleet.converter import tflite_edit

    model = tflite_edit.read_model(data)
    sg = model.subgraphs[0]
    names = {i: t.name.decode() for i, t in enumerate(sg.tensors)}
    producer = {out: op for op in sg.operators for out in op.outputs}
    changed = 0
    for tensor, name in names.items():  # the DEQUANTIZE'd float16 biases of the classifier convs
        if "classifier_palm" in name and name.endswith("resource_dequantize") and tensor in producer:
            source = sg.tensors[producer[tensor].inputs[0]]
            buffer = model.buffers[source.buffer]
            values = np.frombuffer(bytes(buffer.data), np.float16) + np.float16(4.0)
            buffer.data = np.frombuffer(values.astype(np.float16).tobytes(), np.uint8)
            changed += 1
    assert changed == 2, f"expected the two classifier heads' biases, changed {changed}"
    return tflite_edit.write_model(model)


def _http_npz(port: int, arrays: dict[str, np.ndarray]) -> dict:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/infer", data=buf.getvalue(),
                                 headers={"Content-Type": "application/x-npz"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_a_published_two_output_model_serves_both_outputs_bit_exact(tmp_path, broker, prefix, keys):
    model_path = mediapipe_model(MODEL)
    runtime = TFLiteModel(model_path.read_bytes())
    (spec,) = runtime.inputs
    assert [s.name for s in runtime.outputs] == ["Identity", "Identity_1"]
    x = photo_batch(spec.sample_shape, 24, INPUT_RANGE[MODEL])
    data = tmp_path / "photos.npz"
    np.savez(data, **{spec.name: x})
    bundle_path = tmp_path / "palm.efb"
    packed = run_cli("pack", str(model_path), "--data", str(data), "--out", str(bundle_path),
                     "--key", str(keys.private), "--name", "palm", "--version", "1", "--json", timeout=300)
    assert packed.returncode == 0, packed.stderr
    bundle = open_bundle(bundle_path.read_bytes(), TrustStore.from_folder(keys.trust_dir))
    assert bundle.model_bytes == model_path.read_bytes()  # shipped as it is
    assert set(bundle.manifest["selftest"]["outputs"]) == {"Identity", "Identity_1"}
    assert bundle_path.stat().st_size <= 1.15 * model_path.stat().st_size + 64 * 1024

    topics = Topics(prefix)
    watcher = Watcher(broker.address, [topics.reported(DEVICE)])
    agent = AgentProcess(tmp_path, DEVICE, broker.address, prefix, keys.trust_dir).start()
    client = connect(broker.address, "test")
    try:
        v1 = publish_cli(bundle_path, broker.address, prefix, keys.private, "--device", DEVICE)
        reported = watcher.wait_for(topics.reported(DEVICE), is_active(v1["bundle_id"]), 120)
        checked = reported["active"]["selftest"]["outputs"]
        assert set(checked) == {"Identity", "Identity_1"} and all(c["passed"] for c in checked.values())

        sample = {spec.name: x[:3]}
        expected, _ = runtime.run(sample)  # LiteRT here, on the same inputs
        answers = {"http": _http_npz(agent.http_port, sample),
                   "mqtt": MqttInferClient(client, topics, DEVICE).infer(sample, timeout=30)}
        for path, answer in answers.items():
            assert set(answer["outputs"]) == {"Identity", "Identity_1"}, path
            assert answer["top1"] == {}, path  # boxes and scores, no class scores
            for name, value in expected.items():
                got = np.asarray(answer["outputs"][name], np.float32)
                assert got.shape == value.shape and np.array_equal(got, value), (path, name)

        # the variant that breaks the second output, with the golden set of the original
        broken = _break_second_output(bundle.model_bytes)
        b_out, _ = TFLiteModel(broken).run(sample)
        assert np.array_equal(b_out["Identity"], expected["Identity"])
        assert not np.allclose(b_out["Identity_1"], expected["Identity_1"])
        manifest = {k: v for k, v in bundle.manifest.items() if k not in ("format", "files")}
        manifest["version"] = "2"
        v2_path = tmp_path / "palm-2.efb"
        write_bundle(v2_path, manifest, {**bundle.files, "model.tflite": broken}, keys.key)
        v2 = publish_cli(v2_path, broker.address, prefix, keys.private, "--device", DEVICE)
        failed = watcher.wait_for(
            topics.reported(DEVICE),
            lambda r: (r.get("install") or {}).get("bundle_id") == v2["bundle_id"]
            and r["install"]["state"] == "failed", 120)
        assert failed["install"]["stage"] == "self-test"
        reason = failed["install"]["reason"]
        assert "output 'Identity_1'" in reason and "output 'Identity'" not in reason, reason
        assert failed["active"]["bundle_id"] == v1["bundle_id"]
        again = _http_npz(agent.http_port, sample)
        assert again["bundle_id"] == v1["bundle_id"]
    finally:
        close(client)
        code = agent.stop()
        watcher.close()
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()
