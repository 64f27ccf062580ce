"""A disk without room for a bundle ends its install as failed, with the operating system's
reason on `reported`, before any chunk is fetched (the download's file is allocated at its
full size first); the model that was serving keeps serving.

The refusal is real: the agent runs under RLIMIT_FSIZE, so the kernel fails any write
that would make a file larger than the limit (EFBIG, "File too large"), as a full disk
fails one with ENOSPC. Python ignores SIGXFSZ, so the write raises OSError."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import time

import pytest

from edgefleet.protocol.topics import Topics
from tests.agent.test_bad_input_keeps_old_model import rebuild
from tests.support import AgentProcess, Watcher, http_infer, is_active, npy_bytes, publish_cli, signed_variant

pytestmark = pytest.mark.slow


def test_no_room_for_a_bundle_fails_its_install_before_download_and_keeps_the_old_model(
        tmp_path, broker, prefix, keys, tiny):
    topics = Topics(prefix)
    device = "pi-full"
    agent = AgentProcess(tmp_path, device, broker.address, prefix, keys.trust_dir)
    watcher = Watcher(broker.address, [topics.reported(device)])
    v2 = rebuild(tiny.bundle, tmp_path / "v2.efb", keys, "2")
    limit = v2.stat().st_size // 2  # chunks (2 KiB) would fit; the bundle does not
    try:
        agent.start()
        v1 = publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--device", device)
        watcher.wait_for(topics.reported(device), is_active(v1["bundle_id"]), 60)
        assert agent.stop() == 0

        agent.start(preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
        watcher.wait_for(topics.reported(device), is_active(v1["bundle_id"]))
        pub = publish_cli(v2, broker.address, prefix, keys.private, "--device", device,
                          "--chunk-size", "2048")
        failed = watcher.wait_for(
            topics.reported(device),
            lambda r: (r.get("install") or {}).get("bundle_id") == pub["bundle_id"]
            and r["install"]["state"] in ("failed", "active"), 60)
        assert failed["install"]["state"] == "failed", failed
        assert failed["install"]["stage"] == "download"
        assert "File too large" in failed["install"]["reason"]
        assert "before any chunk was fetched" in failed["install"]["reason"]
        assert failed["install"]["chunks_have"] == 0
        assert failed["state"] == "failed" and failed["active"]["bundle_id"] == v1["bundle_id"]
        status, answer = http_infer(agent.http_port, npy_bytes(tiny.x[:5]))
        assert status == 200 and answer["bundle_id"] == v1["bundle_id"]
        assert agent.proc is not None and agent.proc.poll() is None
    finally:
        code = agent.stop()
        watcher.close()
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()


def _mount_tmpfs(folder, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir(parents=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


def _fill(folder) -> None:
    """Write until the file system says it is full (ENOSPC)."""
    with (folder / "filler").open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


@pytest.mark.parametrize("how", ["bundle larger than the free space", "file system full"])
def test_state_dir_on_a_full_tmpfs_fails_the_install_with_the_reason_and_keeps_the_old_model(
        tmp_path, broker, prefix, keys, tiny, how):
    topics = Topics(prefix)
    device = "pi-tmpfs"
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "4m")
    agent = AgentProcess(tmp_path, device, broker.address, prefix, keys.trust_dir)
    agent.state_dir = disk / "state"
    agent.config.write_text(agent.config.read_text().replace(str(tmp_path / "state"), str(agent.state_dir)))
    watcher = Watcher(broker.address, [topics.reported(device)])
    big = how.startswith("bundle")
    v2 = signed_variant(tiny.bundle, tmp_path / "v2.efb", keys, "2",
                        **({"padding.bin": os.urandom(6 << 20)} if big else {}))
    try:
        agent.start()
        v1 = publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--device", device)
        watcher.wait_for(topics.reported(device), is_active(v1["bundle_id"]), 60)
        if not big:
            _fill(disk)
        pub = publish_cli(v2, broker.address, prefix, keys.private, "--device", device)
        failed = watcher.wait_for(
            topics.reported(device),
            lambda r: ((r.get("install") or {}).get("bundle_id") == pub["bundle_id"]
            and r["install"]["state"] in ("failed", "active"))
            or (r.get("last_error") or {}).get("bundle_id") == pub["bundle_id"], 60)
        error = failed.get("last_error") or failed["install"]
        assert "No space left on device" in error["reason"], failed
        assert (failed.get("install") or {}).get("state") != "active"
        assert failed["active"]["bundle_id"] == v1["bundle_id"]
        status, answer = http_infer(agent.http_port, npy_bytes(tiny.x[:5]))
        assert status == 200 and answer["bundle_id"] == v1["bundle_id"]
        assert agent.proc is not None and agent.proc.poll() is None
        if not big:  # room again: the same bundle, asked for again, goes in
            (disk / "filler").unlink()
            started = time.time()
            publish_cli(v2, broker.address, prefix, keys.private, "--device", device)
            watcher.wait_for(topics.reported(device), lambda r: r["ts"] > started
                             and is_active(pub["bundle_id"])(r), 60)
    finally:
        code = agent.stop()
        watcher.close()
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()
