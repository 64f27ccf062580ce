"""agent.toml parsing and the on-disk store."""

from __future__ import annotations

import json

import pytest

from edgefleet.agent.config import ConfigError, load_config, parse_config
from edgefleet.agent.store import Store
from edgefleet.protocol.delivery import build_transfer_manifest, parse_transfer_manifest
from edgefleet.protocol.signing import TrustStore

BASE = {"device_id": "pi-1", "state_dir": "/tmp/x", "trust_dir": "/tmp/y"}


def test_example_config_in_docs_parses(tmp_path):
    cfg = load_config("systemd/agent.example.toml")
    assert cfg.device_id and cfg.runtime.delegate == "auto" and cfg.runtime.api == "auto"


@pytest.mark.parametrize("data, words", [
    ({**BASE, "mqtt": {"hots": "x"}}, "unknown key(s) ['hots']"),
    ({**BASE, "mqtt": {"port": "1883"}}, "[mqtt].port: expected int"),
    ({**BASE, "runtime": {"delegate": "gpu"}}, "delegate: choose auto or one of"),
    ({**BASE, "serve": {"http": "8080"}}, "HOST:PORT"),
    ({**BASE, "device_id": "a/b"}, "not valid"),
    ({"state_dir": "x", "trust_dir": "y"}, "'device_id' is required"),
    ({**BASE, "colour": "red"}, "unknown key(s) ['colour']"),
    ({**BASE, "telemetry": {"interval_s": 0}}, "interval_s must be above 0"),
    ({**BASE, "trust": {"on_revoked": "ignore"}}, "[trust] on_revoked: choose one of ['report', 'de"),
    ({**BASE, "trust": {"allow_unsigned": "yes"}}, "[trust].allow_unsigned: expected bool"),
])
def test_bad_config_names_the_key(data, words):
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert words in str(exc.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("device_id = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_integer_accepted_for_float_settings():
    assert parse_config({**BASE, "telemetry": {"interval_s": 2}}).telemetry.interval_s == 2.0


def test_store_resumes_a_download_and_drops_damaged_chunks(tmp_path, keys):
    data = bytes(range(256)) * 40
    payload, chunks = build_transfer_manifest(data, "m", "1", keys.key, chunk_size=1024)
    m = parse_transfer_manifest(json.dumps(payload).encode(), TrustStore.from_folder(keys.trust_dir),
                                payload["body"]["bundle_id"])
    part = Store(tmp_path).partial(m)
    assert part.present == set()
    for i in (0, 3, 5):
        part.write(i, chunks[i])
    part.sync()
    part.close()
    # a chunk damaged on disk (bit rot, another tool) counts as missing again
    with (tmp_path / "downloads" / m.bundle_id / "bundle.part").open("r+b") as f:
        f.seek(3 * 1024)
        f.write(b"junk")
    part = Store(tmp_path).partial(m)
    assert part.present == {0, 5}
    for i in set(range(len(chunks))) - {0, 5}:
        part.write(i, chunks[i])
    done = part.finish()
    assert done.data == data and done.sha256 == m.bundle_sha256


def test_store_keeps_active_and_previous_only(tmp_path):
    store = Store(tmp_path)
    for name in ("a", "b", "c"):
        store.install(name, name.encode())
        store.set_active(name)
    assert store.active_record()["active"] == "c" and store.active_record()["previous"] == "b"
    assert store.installed("a") is None and store.installed("b") == b"b"
    # re-activating the active bundle keeps the previous one
    store.set_active("c")
    assert store.active_record()["previous"] == "b"


def test_store_keeps_as_many_previous_bundles_as_configured(tmp_path):
    store = Store(tmp_path, keep_previous=3)
    for name in ("a", "b", "c", "d", "e"):
        store.install(name, name.encode())
        store.set_active(name)
    assert store.history() == ["e", "d", "c", "b"]
    assert store.installed("a") is None and all(store.installed(n) for n in "bcde")
    store.set_active("c")  # a rollback to c: it comes first, the others stay in order
    assert store.history() == ["c", "e", "d", "b"]
    store.fall_back_to("d")  # c and e unusable: d becomes active, b stays behind it
    assert store.history() == ["d", "b"] and store.active_record()["previous"] == "b"
    assert sorted(p.stem for p in store.bundles.glob("*.efb")) == ["b", "d"]
    assert Store(tmp_path, keep_previous=0).set_active("d")["history"] == ["d"]


@pytest.mark.parametrize("data, words", [
    ({**BASE, "mqtt": {"port": 70000}}, "port must be 1..65535"),
    ({**BASE, "mqtt": {"keepalive": -1}}, "keepalive must be 0"),
    ({**BASE, "runtime": {"num_threads": -5}}, "num_threads must be 0"),
    ({**BASE, "telemetry": {"interval_s": float("nan")}}, "interval_s"),
    ({**BASE, "serve": {"http": "127.0.0.1:99999"}}, "port 0..65535"),
    ({**BASE, "delivery": {"max_bad_chunks": 0}}, "max_bad_chunks must be at least 1"),
    ({**BASE, "delivery": {"max_bundle_mib": 0}}, "max_bundle_mib must be above 0"),
    ({**BASE, "delivery": {"max_chunks": 0}}, "max_chunks must be at least 1"),
    ({**BASE, "delivery": {"keep_previous": -1}}, "keep_previous must be 0 or more"),
    ({**BASE, "serve": {"max_inflight_mib": 4}}, "max_inflight_mib must hold one request"),
    ({**BASE, "serve": {"max_inflight_mib": float("inf")}}, "max_inflight_mib must hold one request"),
])
def test_values_out_of_range_are_refused_at_start(data, words):
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert words in str(exc.value)


def test_damaged_active_bundle_falls_back_without_keeping_it_as_rollback(tmp_path):
    store = Store(tmp_path)
    for name in ("a", "b"):
        store.install(name, name.encode())
        store.set_active(name)
    store.fall_back_to("a")
    assert store.active_record()["active"] == "a" and store.active_record()["previous"] is None


def test_start_up_removes_the_download_of_a_bundle_already_installed(tmp_path):
    """A crash during the clean-up after activation leaves the download behind (issue 10)."""
    (tmp_path / "downloads" / "m-1-aaaaaaaaaaaa").mkdir(parents=True)
    (tmp_path / "downloads" / "m-1-aaaaaaaaaaaa" / "chunks.have").write_bytes(b"x")  # half removed
    (tmp_path / "downloads" / "m-2-bbbbbbbbbbbb").mkdir()  # a download to resume
    (tmp_path / "downloads" / "m-2-bbbbbbbbbbbb" / "bundle.part").write_bytes(b"y")
    (tmp_path / "bundles").mkdir()
    (tmp_path / "bundles" / "m-1-aaaaaaaaaaaa.efb").write_bytes(b"installed")
    Store(tmp_path)
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == ["m-2-bbbbbbbbbbbb"]
    assert (tmp_path / "downloads" / "m-2-bbbbbbbbbbbb" / "bundle.part").read_bytes() == b"y"


def test_two_agents_cannot_share_a_state_dir(tmp_path):
    """The state directory's lock (issue 10): the second one stops at start-up, saying who holds it."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from edgefleet.agent.store import Store\n"
                               f"Store({str(tmp_path)!r}, lock=True)\nprint('locked', flush=True)\n"
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(OSError, match=rf"another agent \(pid {holder.pid}\) uses"):
            Store(tmp_path, lock=True)
    finally:
        holder.kill()
        holder.wait()
    store = Store(tmp_path, lock=True)  # the kernel let go of a dead holder's lock
    with pytest.raises(OSError, match="another agent"):
        Store(tmp_path, lock=True)  # a second one in the same process is refused too
    store.close()
    Store(tmp_path, lock=True).close()
