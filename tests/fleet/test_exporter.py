"""`edgefleet exporter` scraped over HTTP and read with prometheus_client's parsers, with
simulated devices behind a real Mosquitto; the Grafana dashboard and the alert rules name
only metrics it serves, and promtool accepts the rules."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families as text_families

from edgefleet.fleet.broker import free_port
from edgefleet.fleet.exporter import FleetCollector, wants_native
from edgefleet.fleet.fleet_view import FleetView
from edgefleet.protocol.histogram import SCHEMA
from edgefleet.protocol.topics import Topics
from tests.support import ROOT, wait_port

DOCS = ROOT / "docs" / "prometheus"
OM2 = "application/openmetrics-text; version=2.0.0; charset=utf-8"


def _get(port: int, accept: str | None = None) -> str:
    headers = {"Accept": accept} if accept else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.read().decode()


@pytest.fixture(scope="module")
def scraped(broker):
    prefix = f"exp-{time.time_ns() % 10**8}"
    common = ["--broker", broker.address, "--prefix", prefix]
    edgefleet = [sys.executable, "-m", "edgefleet"]
    sim = subprocess.Popen([*edgefleet, "simulate", "--devices", "4", "--interval", "0.3", "--profiles",
                            "rpi4,coral-devboard", *common], stdout=subprocess.DEVNULL, cwd=ROOT)
    port = free_port()
    exporter = subprocess.Popen([*edgefleet, "exporter", "--listen", f"127.0.0.1:{port}", *common],
                                stdout=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_port("127.0.0.1", port, 30)
        deadline = time.time() + 30
        while time.time() < deadline:
            text = _get(port)
            if text.count("edgefleet_inference_latency_seconds_count{") == 4:
                break
            time.sleep(0.3)
        time.sleep(1.0)
        yield {"text": _get(port), "om2": _get(port, OM2), "om1": _get(port, "application/openmetrics-text")}
    finally:
        for p in (exporter, sim):
            p.terminate()
            p.wait(15)


def test_the_scrape_parses_and_holds_every_device(scraped):
    families = {f.name: f for f in text_families(scraped["text"])}
    status = [s for s in families["edgefleet_device_status"].samples if s.value == 1]
    assert sorted(s.labels["device"] for s in status) == [f"sim-0000{n}" for n in range(1, 5)]
    assert {s.labels["status"] for s in status} == {"online"}
    assert {s.labels["model"] + s.labels["version"] for s in status} == {"digits1"}
    watts = families["edgefleet_power_watts"].samples
    assert {s.labels["source"] for s in watts} == {"estimated:rpi4"}  # coral-devboard has no idle figure
    assert all(3.0 < s.value < 7.0 for s in watts)
    joules = families["edgefleet_energy_per_inference_joules"].samples
    assert joules and all(0 < s.value < 5 for s in joules)  # joules, not millijoules
    delegates = {s.labels["device"]: s.labels["delegate"] for s in status}
    assert sorted(set(delegates.values())) == ["cpu", "edgetpu"]
    assert families["edgefleet_inferences"].type == "counter"


def test_latency_is_a_histogram_on_the_native_buckets_bounds(scraped):
    [latency] = [f for f in text_families(scraped["text"]) if f.name == "edgefleet_inference_latency_seconds"]
    assert latency.type == "histogram"
    base = 2 ** (2 ** -SCHEMA)
    per_device: dict[str, list] = {}
    for s in latency.samples:
        per_device.setdefault(s.labels["device"], []).append(s)
    assert len(per_device) == 4
    for samples in per_device.values():
        buckets = [s for s in samples if s.name.endswith("_bucket")]
        count = next(s.value for s in samples if s.name.endswith("_count"))
        values = [s.value for s in buckets]
        assert values == sorted(values) and values[-1] == count > 0 and buckets[-1].labels["le"] == "+Inf"
        for s in buckets[:-1]:  # each bound is base**i: the device's own bucket edges, not re-binned
            index = math.log(float(s.labels["le"])) / math.log(base)
            assert abs(index - round(index)) < 1e-6
    # older formats carry no bare native sample; OpenMetrics 2.0 does, with the same counts
    assert not re.search(r"^edgefleet_inference_latency_seconds\{", scraped["text"], re.M)
    assert not re.search(r"^edgefleet_inference_latency_seconds\{", scraped["om1"], re.M)
    om = {f.name: f for f in openmetrics_families(scraped["om2"])}
    natives = [s for s in om["edgefleet_inference_latency_seconds"].samples if s.native_histogram]
    assert len(natives) == 4
    same_scrape = {x.labels["device"]: x.value for x in om["edgefleet_inference_latency_seconds"].samples
                   if x.name.endswith("_count")}  # telemetry goes on arriving between two scrapes
    for s in natives:
        nh = s.native_histogram
        assert nh.schema == SCHEMA and nh.count_value == same_scrape[s.labels["device"]]
        counts, running = [], 0
        for delta in nh.pos_deltas:
            running += delta
            counts.append(running)
        assert sum(counts) + nh.zero_count == nh.count_value and min(counts) > 0
    # prometheus_client's parser drops spans whose first offset is negative (every sub-second
    # latency has one), so the spans are read from the text itself
    spans = re.findall(r"positive_spans:\[(-?\d+):(\d+)", scraped["om2"])
    assert len(spans) == 4 and all(int(offset) < 0 for offset, _ in spans)


def _served(text: str) -> set[str]:
    names = set()
    for family in text_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return names


def _named(text: str) -> set[str]:
    return set(re.findall(r"\bedgefleet_[a-z0-9_]+", text))


def test_the_grafana_dashboard_and_the_alert_rules_name_only_served_metrics(scraped):
    served = _served(scraped["text"])
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert _named(exprs) and _named(exprs) <= served, _named(exprs) - served
    rules = (DOCS / "edgefleet-alerts.yml").read_text()
    assert _named(rules) and _named(rules) <= served, _named(rules) - served


def test_promtool_accepts_the_alert_rules():
    promtool = os.environ.get("EDGEFLEET_PROMTOOL") or shutil.which("promtool")
    if not promtool:
        pytest.skip("no promtool (scripts/test unpacks it from Debian's prometheus package)")
    proc = subprocess.run([promtool, "check", "rules", str(DOCS / "edgefleet-alerts.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "SUCCESS: 8 rules found" in proc.stdout, proc.stdout + proc.stderr


def test_fallback_throttling_and_failed_installs_are_metrics():
    topics = Topics("p")
    view = FleetView(topics)
    view.handle(topics.status("tpu-1"), b'{"state": "online", "ts": %f}' % time.time())
    view.handle(topics.reported("tpu-1"), orjson.dumps({
        "ts": time.time(), "state": "failed", "install": {"state": "failed", "bundle_id": "x"},
        "active": {"name": "m", "version": "1", "bundle_id": "m-1"}, "agent": {"groups": ["g"]}}))
    view.handle(topics.telemetry("tpu-1"), orjson.dumps({
        "ts": time.time(), "model": {"name": "m", "version": "1"},
        "delegate": {"requested": "edgetpu", "active": "cpu", "on_cpu": True},
        "system": {"throttling": {"throttled": True}}, "inference": {"latency_histogram": "garbage"}}))
    values = {s.name: s.value for family in FleetCollector(view).collect() for s in family.samples
              if s.labels.get("device") == "tpu-1"}
    assert values["edgefleet_delegate_fallback"] == 1 and values["edgefleet_throttled"] == 1
    assert values["edgefleet_install_failed"] == 1
    assert "edgefleet_inference_latency_seconds_count" not in values  # an unreadable histogram is left out


def test_only_openmetrics_2_asks_for_native_histograms():
    assert wants_native(OM2) and wants_native("text/plain;q=0.5, application/openmetrics-text;version=2.1.0")
    for accept in ("", "text/plain; version=0.0.4", "application/openmetrics-text; version=1.0.0",
                   "application/openmetrics-text"):
        assert not wants_native(accept)
