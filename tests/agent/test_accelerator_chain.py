"""The accelerator chain in the running agent: a bundle converted for the Edge TPU on a
board profile that has one but no libedgetpu (this machine: the missing library is the
one fake, and the loader's own message is what the agent must pass on), the same under
`require_accelerator`, and the same bundle on a board without an Edge TPU, refused
before a chunk is downloaded or installed with a warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.protocol.bundle import open_bundle, write_bundle
from edgefleet.protocol.signing import TrustStore
from edgefleet.protocol.topics import Topics
from edgefleet.runtime import TFLiteModel
from tests.support import AgentProcess, Watcher, http_infer, is_active, npy_bytes, publish_cli, top1

pytestmark = pytest.mark.slow


def _edgetpu_bundle(tiny, keys, dst: Path) -> Path:
    """The tiny bundle as the converter writes one for --target coral-usb (an int8 model
    the edgetpu_compiler has not compiled, so the CPU can still run it)."""
    bundle = open_bundle(tiny.bundle.read_bytes(), TrustStore.from_folder(keys.trust_dir))
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("format", "files")}
    manifest["version"] = "tpu-1"
    manifest["target"] = {"profile": "coral-usb", "accelerator": "edgetpu"}
    manifest["runtime"] = {**manifest["runtime"], "delegate": "edgetpu",
                           "delegate_library": "libedgetpu.so.1", "delegate_options": {"device": "usb"}}
    write_bundle(dst, manifest, bundle.files, keys.key)
    return dst


def _run(tmp_path, broker, prefix, keys, tiny, device: str, runtime_toml: str, profile: str,
         until) -> tuple[dict, AgentProcess, dict]:
    topics = Topics(prefix)
    watcher = Watcher(broker.address, [topics.reported(device), topics.telemetry(device)])
    agent = AgentProcess(tmp_path, device, broker.address, prefix, keys.trust_dir,
                         extra_toml=f'[runtime]\n{runtime_toml}\n[board]\nprofile = "{profile}"\n').start()
    try:
        published = publish_cli(_edgetpu_bundle(tiny, keys, tmp_path / "tpu.efb"), broker.address, prefix,
                                keys.private, "--device", device)
        reported = watcher.wait_for(topics.reported(device), until(published["bundle_id"]), 60)
        return reported, agent, {"watcher": watcher, "topics": topics, "bundle_id": published["bundle_id"]}
    except BaseException:
        agent.stop()
        watcher.close()
        raise


def _failed(bundle_id: str):
    return lambda r: ((r.get("install") or {}).get("bundle_id") == bundle_id
                      and r["install"]["state"] == "failed")


def _finish(agent: AgentProcess, ctx: dict) -> None:
    code = agent.stop()
    ctx["watcher"].close()
    assert code == 0, agent.log_text()


def test_without_libedgetpu_the_cpu_serves_and_says_why(tmp_path, broker, prefix, keys, tiny):
    reported, agent, ctx = _run(tmp_path, broker, prefix, keys, tiny, "coral-1", 'delegate = "auto"',
                                "coral-usb", is_active)
    try:
        delegate = reported["active"]["delegate"]
        assert delegate["requested"] == "edgetpu" and delegate["active"] == "cpu" and delegate["on_cpu"]
        assert delegate["chain"] == ["edgetpu", "cpu"]
        [fallback] = delegate["fallbacks"]
        # the loader's own words (LiteRT: "Failed to load delegate from libedgetpu.so.1")
        assert fallback["delegate"] == "edgetpu" and "libedgetpu.so.1" in fallback["reason"]
        assert "did not load" in fallback["reason"]
        status, answer = http_infer(agent.http_port, npy_bytes(tiny.x[:20]))
        expected = TFLiteModel(tiny.tflite.read_bytes()).predict(tiny.x[:20])[0].argmax(-1).tolist()
        assert status == 200 and top1(answer) == expected
        telemetry = ctx["watcher"].wait_for(ctx["topics"].telemetry("coral-1"),
                                            lambda t: t["model"] is not None, 30)
        assert telemetry["delegate"]["fallbacks"] == delegate["fallbacks"]
        assert telemetry["runtime"]["api"] in ("Interpreter", "CompiledModel")
    finally:
        _finish(agent, ctx)


def test_require_accelerator_refuses_a_model_that_would_run_on_the_cpu(tmp_path, broker, prefix, keys, tiny):
    """Refused from the transfer manifest, before a chunk is fetched (issue 10, item 5: the
    delegate library is checked before the download; it was refused at self-test before)."""
    reported, agent, ctx = _run(tmp_path, broker, prefix, keys, tiny, "coral-2",
                                'delegate = "auto"\nrequire_accelerator = true', "coral-usb", _failed)
    try:
        assert reported["install"]["stage"] == "manifest"
        reason = reported["install"]["reason"]
        assert "require_accelerator" in reason and "libedgetpu.so.1 is not on this device" in reason
        assert reported["active"] is None or reported["active"].get("bundle_id") != ctx["bundle_id"]
        assert not (agent.state_dir / "bundles" / f"{ctx['bundle_id']}.efb").exists()
        assert not list((agent.state_dir / "downloads").glob("*/bundle.part"))
    finally:
        _finish(agent, ctx)


def test_a_bundle_for_an_accelerator_the_board_lacks_is_refused_before_download(tmp_path, broker, prefix,
                                                                                 keys, tiny):
    reported, agent, ctx = _run(tmp_path, broker, prefix, keys, tiny, "x86-1", "", "generic-x86_64", _failed)
    try:
        assert reported["install"]["stage"] == "manifest"
        assert "target mismatch" in reported["install"]["reason"]
        assert "edgetpu" in reported["install"]["reason"] and "coral-usb" in reported["install"]["reason"]
        # nothing fetched: no chunk of the bundle ever reached the disk
        assert not list((agent.state_dir / "downloads").glob("*/bundle.part"))
    finally:
        _finish(agent, ctx)


def test_target_mismatch_warn_installs_with_a_warning(tmp_path, broker, prefix, keys, tiny):
    reported, agent, ctx = _run(tmp_path, broker, prefix, keys, tiny, "x86-2", 'target_mismatch = "warn"',
                                "generic-x86_64", is_active)
    try:
        delegate = reported["active"]["delegate"]
        assert delegate["active"] == "cpu"
        assert any(n.startswith("warning: the bundle was converted for edgetpu") for n in delegate["notes"])
    finally:
        _finish(agent, ctx)
