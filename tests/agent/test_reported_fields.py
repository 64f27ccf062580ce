"""`reported.install` carries every documented field at every stage (issue 10, item 11),
and the system figures say null where there is nothing to measure."""

from __future__ import annotations

import json

from edgefleet.agent.reporter import Context, Reporter
from edgefleet.agent.telemetry import SystemSampler

FIELDS = {"bundle_id", "state", "progress", "chunks_have", "chunks_total", "chunks_resumed",
          "chunks_refetched", "updated_at"}


def test_install_fields_are_there_before_the_manifest_and_kept_after():
    sent: list[dict] = []
    reporter = Reporter("d1", lambda body: sent.append(json.loads(body)),
                        lambda: Context(None, "b-1", "device", None, {}))
    reporter.set_install("b-1", "downloading", progress=0.0, force=True)  # no manifest yet
    install = sent[-1]["install"]
    assert set(install) == FIELDS
    assert install["chunks_have"] == 0 and install["chunks_total"] is None and install["chunks_resumed"] == 0
    reporter.set_install("b-1", "downloading", progress=0.5, chunks_have=1, chunks_total=2,
                         chunks_resumed=0, force=True)
    reporter.set_install("b-1", "verifying", force=True)
    install = sent[-1]["install"]
    assert set(install) == FIELDS and (install["chunks_have"], install["chunks_total"]) == (1, 2)
    reporter.set_install("b-2", "downloading", progress=0.0, force=True)  # another bundle starts afresh
    assert sent[-1]["install"]["chunks_total"] is None and sent[-1]["install"]["chunks_have"] == 0


def test_no_thermal_zone_is_null_not_an_empty_object(tmp_path):
    system = SystemSampler(thermal_root=str(tmp_path)).sample()
    assert system["temperatures_c"] is None and system["temperature_c"] is None
