"""The monitor's history and `edgefleet report`, each test on SQLite and on a real PostgreSQL
server started by the tests: telemetry and state changes recorded through the FleetView, kept
across a restart, rolled up into minutes and trimmed by retention, and plotted into real PNG
files of the expected size with data in them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
from PIL import Image

from edgefleet.devices.profiles import load_profile
from edgefleet.fleet.fleet_view import FleetView
from edgefleet.fleet.history import History, recorder
from edgefleet.fleet.report import DPI, SIZE_IN, write_report
from edgefleet.fleet.sim_device import Behaviour, SimDevice
from edgefleet.protocol.desired import BundleRef
from edgefleet.protocol.topics import Topics
from tests.pg_server import PostgresServer, find_postgres
from tests.support import ROOT, run_cli

T = Topics("p")


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    bin_dir = find_postgres()
    if bin_dir is None:
        if os.environ.get("EDGEFLEET_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL was installed for the tests but its binaries are not found")
        pytest.skip("no PostgreSQL server binaries (scripts/test installs Debian's postgresql)")
    server = PostgresServer(bin_dir, tmp_path_factory.mktemp("pg")).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """Where the history lives: an SQLite file, or a database of its own on the PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "history.sqlite")
    return request.getfixturevalue("postgres").new_database()
V1, V2 = BundleRef("m", "1", "1" * 64), BundleRef("m", "2", "2" * 64)


def _record(history: History, start: float, minutes: int = 10) -> None:
    """Three devices at one message a minute... every 10 s for MINUTES minutes; d3 moves to v2
    half way (a slower version)."""
    view = FleetView(T)
    view.listeners.append(recorder(history))
    behaviour = Behaviour(slower={"2": 3.0}, install_s=0.0)
    devices = [SimDevice(f"d{n}", load_profile("rpi4"), ["g"], V1, behaviour, rate_per_s=20.0, seed=n)
               for n in range(1, 4)]
    for d in devices:
        view.handle(T.status(d.device_id), d.status())
        view.handle(T.reported(d.device_id), d.reported())
    for k in range(minutes * 6):
        ts = start + 10 * k
        if k == minutes * 3:
            devices[2].want("device", V2, "key", now=ts)
            devices[2].advance(ts + 1)
            view.handle(T.reported("d3"), devices[2].reported())
        for d in devices:
            body = orjson.loads(d.telemetry(ts))
            view.handle(T.telemetry(d.device_id), orjson.dumps(body), ts)
    view.handle(T.status("d1"), devices[0].will())


def _has_data(path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (int(SIZE_IN[0] * DPI), int(SIZE_IN[1] * DPI))
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20  # lines, labels, not a blank canvas
    lines = sum(n for n, (r, g, b) in colours if abs(r - g) > 40 or abs(g - b) > 40)  # coloured pixels
    assert lines > 500, lines


def test_history_survives_a_restart_and_the_report_plots_it(tmp_path, store):
    path = store
    start = time.time() - 11 * 60
    history = History(path).start()
    _record(history, start)
    history.close()  # the monitor stops
    history = History(path)  # and starts again
    rows = history.telemetry(start - 1)
    assert len(rows) == 3 * 60 and {r["device_id"] for r in rows} == {"d1", "d2", "d3"}
    kinds = [(e["device_id"], e["kind"], e["detail"].get("state") or e["detail"].get("version"))
             for e in history.events(start - 1000)]
    assert ("d3", "active", "2") in kinds and ("d1", "status", "offline") in kinds
    result = write_report(history, tmp_path / "report", 3600)
    history.close()
    assert len(result["images"]) == 8 and result["devices"] == 3
    for name in result["images"]:
        _has_data(tmp_path / "report" / name)
    text = (tmp_path / "report" / "report.md").read_text()
    v1 = next(v for v in result["versions"] if v["version"] == "1")
    v2 = next(v for v in result["versions"] if v["version"] == "2")
    assert v2["devices"] == 1 and v2["p95_ms_median"] > 2 * v1["p95_ms_median"]  # the slower version shows
    assert "| m | 2 | 1 |" in text and "d3 active" in text and "p95_ms-per-version.png" in text


def test_old_rows_roll_up_into_minutes_and_retention_trims_them(store):
    history = History(store, raw_retention_s=300, retention_s=3600)
    now = time.time()
    _record(history, now - 20 * 60, minutes=20)
    history.flush()
    before = len(history.telemetry(now - 3600))
    history.maintain(now)
    rows = history.telemetry(now - 3600)
    raw = [r for r in rows if "minute" not in r]
    minutes = [r for r in rows if "minute" in r]
    assert raw and minutes
    assert min(r["ts"] for r in raw) >= now - 300  # raw rows past their 5 minutes are gone
    assert max(r["minute"] for r in minutes) < now - 300  # rolled up 5 minutes after they end
    assert minutes and {r["device_id"] for r in minutes} == {"d1", "d2", "d3"}
    assert all(r["messages"] == 6 for r in minutes[3:-3])  # a minute of 10 s messages
    assert len(rows) < before
    history.maintain(now + 2 * 3600)  # past every retention
    assert history.telemetry(now - 3600) == []
    history.close()


def test_the_monitor_records_and_report_reads_it_across_a_restart(broker, prefix, tmp_path, store):
    path = store
    env_args = ["--broker", broker.address, "--prefix", prefix]
    edgefleet = [sys.executable, "-m", "edgefleet"]
    sim = subprocess.Popen([*edgefleet, "simulate", "--devices", "3", "--interval", "0.3", *env_args],
                           stdout=subprocess.DEVNULL, cwd=ROOT)
    try:
        spans = []
        for _ in range(2):  # stopped with Ctrl-C and started again
            began = time.time()
            monitor = subprocess.Popen([*edgefleet, "monitor", "--history", str(path), "--history-every",
                                        "1s", *env_args],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
            time.sleep(4)
            monitor.send_signal(signal.SIGINT)
            assert monitor.wait(30) == 0, monitor.stderr.read() if monitor.stderr else ""
            spans.append((began, time.time()))
    finally:
        sim.terminate()
        sim.wait(15)
    history = History(path)
    rows = history.telemetry(spans[0][0] - 5)
    history.close()
    for began, ended in spans:  # each run left its rows
        assert sum(1 for r in rows if began <= r["ts"] <= ended) >= 3 * 3  # 3 devices, each second
    out = tmp_path / "report"
    proc = run_cli("report", "--since", "10m", "--history", str(path), "--out", str(out), "--format", "html",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["devices"] == 3 and (out / "report.html").read_text().startswith("<!doctype html>")
    for name in result["images"]:
        _has_data(out / name)
