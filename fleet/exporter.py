"""Fleet metrics for Prometheus (`edgefleet exporter`, `edgefleet monitor --prometheus`): read
from the monitor's FleetView at each scrape, named by Prometheus' conventions (base units:
seconds, joules, watts, celsius; labels device, group, model, version, delegate).

Latency is a histogram built from the devices' own buckets: classic `le` buckets at the
native buckets' upper bounds for every scraper, and the same counts as a native histogram
(schema 3 spans and deltas) in OpenMetrics 2.0, which prometheus_client writes when a
scraper asks for `application/openmetrics-text; version=2.0.0`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import BucketSpan, NativeHistogram

from edgefleet.fleet.alerts import evaluate
from edgefleet.fleet.fleet_view import FleetView, versions
from edgefleet.protocol.histogram import Histogram, HistogramError, bucket_bounds

LABELS = ("device", "group", "model", "version", "delegate")
STATUSES = ("online", "stale", "offline", "stopped", "unknown")


def native(h: Histogram) -> NativeHistogram:
    """H's buckets as spans of consecutive indices and deltas between neighbouring counts."""
    spans: list[BucketSpan] = []
    deltas: list[int] = []
    previous_index, previous_count = None, 0
    for i in sorted(h.buckets):
        if previous_index is None or i != previous_index + 1:
            gap = i if previous_index is None else i - previous_index - 1
            spans.append(BucketSpan(gap, 1))
        else:
            spans[-1] = BucketSpan(spans[-1].offset, spans[-1].length + 1)
        deltas.append(h.buckets[i] - previous_count)
        previous_index, previous_count = i, h.buckets[i]
    return NativeHistogram(h.count, h.sum_s, h.schema, 0.0, h.zero_count, pos_spans=spans or None,
                           pos_deltas=deltas or None)


def classic(h: Histogram) -> list[tuple[str, float]]:
    """Cumulative counts at each present bucket's upper bound, then +Inf."""
    out, seen = [], h.zero_count
    for i in sorted(h.buckets):
        seen += h.buckets[i]
        out.append((repr(bucket_bounds(i, h.schema)[1]), float(seen)))
    return [*out, ("+Inf", float(h.count))]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class FleetCollector(Collector):
    def __init__(self, view: FleetView, native_histograms: bool = False):
        """NATIVE_HISTOGRAMS: add latency's native-histogram sample (for OpenMetrics 2.0 only: the
        older formats would print it as a bare sample)."""
        self.view, self.native_histograms = view, native_histograms

    def collect(self) -> Iterator[Metric]:
        rows = self.view.rows()
        with self.view.lock:
            telemetry = {d: v.telemetry for d, v in self.view.devices.items()}
            reported = {d: v.reported for d, v in self.view.devices.items()}

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*LABELS, *extra])

        status = gauge("edgefleet_device_status", "1 for the state the device is in: online, stale (online "
                       "but silent for three telemetry intervals), offline (its last will), stopped, unknown",
                       ("status",))
        seen = gauge("edgefleet_device_last_seen_timestamp_seconds", "The newest time the device stamped on "
                     "a message of its own")
        p95 = gauge("edgefleet_inference_latency_p95_seconds", "Invoke latency p95 over the device's recent "
                    "inferences (at most 2,048)")
        watts = gauge("edgefleet_power_watts", "Average power over the latest telemetry window", ("source",))
        joules = gauge("edgefleet_energy_per_inference_joules", "Energy per inference over the latest "
                       "telemetry window", ("source",))
        temp = gauge("edgefleet_temperature_celsius", "Hottest thermal zone of the board")
        throttled = gauge("edgefleet_throttled", "1 while the board reports throttling or a frequency cap")
        fallback = gauge("edgefleet_delegate_fallback", "1 when the model runs on the CPU although another "
                         "delegate was asked for")
        share = gauge("edgefleet_delegated_work_ratio", "Share of the model's work the applied delegate "
                      "took")
        failed = gauge("edgefleet_install_failed", "1 while the device's latest install has failed")
        total = Metric("edgefleet_inferences", "Inferences of the active model since its activation",
                       "counter")
        errors = Metric("edgefleet_inference_errors", "Failed inferences of the active model since its "
                        "activation", "counter")
        latency = Metric("edgefleet_inference_latency_seconds", "Invoke latency of the active model since "
                         "its activation, from the device's own histogram", "histogram")
        for row in rows:
            d = row["device_id"]
            labels = self._labels(row)
            named = dict(zip(LABELS, labels, strict=True))
            for s in STATUSES:
                status.add_metric([*labels, s], 1.0 if row["status"] == s else 0.0)
            if row["last_seen_at"] is not None:
                seen.add_metric(labels, row["last_seen_at"])
            failed.add_metric(labels, 1.0 if row["install"] == "failed" else 0.0)
            tel = _dict(telemetry.get(d))
            if not tel:
                continue
            source = str(row["power_source"] or "")
            for family, value in ((p95, row["latency_p95_ms"]), (temp, row["temperature_c"]),
                                  (share, row["delegated_share"])):
                if value is not None:
                    family.add_metric(labels, value / 1000 if family is p95 else value)
            if row["power_w"] is not None:
                watts.add_metric([*labels, source], row["power_w"])
            if row["energy_per_inference_mj"] is not None:
                joules.add_metric([*labels, source], row["energy_per_inference_mj"] / 1000)
            if row["throttled"] is not None:
                throttled.add_metric(labels, 1.0 if row["throttled"] else 0.0)
            active = _dict(_dict(reported.get(d)).get("active"))
            delegate = _dict(tel.get("delegate")) or _dict(active.get("delegate"))
            if delegate:
                asked, on_cpu = delegate.get("requested"), delegate.get("on_cpu") is True
                fallback.add_metric(labels, 1.0 if asked not in (None, "cpu") and on_cpu else 0.0)
            inf = _dict(tel.get("inference"))
            for family, key in ((total, "count_total"), (errors, "errors_total")):
                value = inf.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    family.add_sample(f"{family.name}_total", named, float(value))
            try:
                h = Histogram.from_dict(inf.get("latency_histogram"))
            except HistogramError:
                continue
            for le, count in classic(h):
                latency.add_sample(f"{latency.name}_bucket", {**named, "le": le}, count)
            latency.add_sample(f"{latency.name}_count", named, float(h.count))
            latency.add_sample(f"{latency.name}_sum", named, h.sum_s)
            if self.native_histograms:
                latency.add_sample(latency.name, named, 0.0, native_histogram=native(h))
        yield from (status, seen, p95, watts, joules, temp, throttled, fallback, share, failed, total, errors,
                    latency)
        version_rows = versions(self.view)
        yield from self._versions(version_rows)
        yield self._alerts(rows, version_rows)
        yield from self._monitor()

    @staticmethod
    def _labels(row: dict[str, Any]) -> list[str]:
        return [row["device_id"], ",".join(row["groups"]), row["model_name"] or "",
                row["model_version"] or "", row["delegate"] or ""]

    def _alerts(self, rows: list[dict[str, Any]], version_rows: list[dict[str, Any]]) -> Metric:
        family = GaugeMetricFamily("edgefleet_alert", "1 for each alert that holds now (fleet/alerts.py): "
                                   "offline, stale, latency_regression, energy_regression, throttled, "
                                   "cpu_fallback, install_failed", labels=[*LABELS, "kind", "severity"])
        by_id = {r["device_id"]: r for r in rows}
        for a in evaluate(self.view, version_rows, rows):
            family.add_metric([*self._labels(by_id[a["device_id"]]), a["kind"], a["severity"]], 1.0)
        return family

    def _versions(self, version_rows: list[dict[str, Any]]) -> Iterator[Metric]:
        labels = ["model", "version"]
        devices = GaugeMetricFamily("edgefleet_version_devices", "Devices whose telemetry names this version",
                                    labels=labels)
        p95 = GaugeMetricFamily("edgefleet_version_latency_p95_seconds", "Invoke latency p95 of the version "
                                "across the fleet, from the devices' merged histograms", labels=labels)
        joules = GaugeMetricFamily("edgefleet_version_energy_per_inference_joules", "Energy per inference of "
                                   "the version across the fleet, over the devices' latest windows",
                                   labels=labels)
        p95_median = GaugeMetricFamily("edgefleet_version_latency_p95_median_seconds", "Median over the "
                                       "version's devices of their own p95: what a regression is judged "
                                       "against", labels=labels)
        joules_median = GaugeMetricFamily("edgefleet_version_energy_per_inference_median_joules", "Median "
                                          "over the version's devices of their energy per inference",
                                          labels=labels)
        for r in version_rows:
            key = [r["model_name"], r["model_version"]]
            devices.add_metric(key, r["devices"])
            if r["device_p95_median_ms"] is not None:
                p95_median.add_metric(key, r["device_p95_median_ms"] / 1000)
            if r["device_mj_median"] is not None:
                joules_median.add_metric(key, r["device_mj_median"] / 1000)
            if r["latency_p95_ms"] is not None:
                p95.add_metric(key, r["latency_p95_ms"] / 1000)
            if r["energy_per_inference_mj"] is not None:
                joules.add_metric(key, r["energy_per_inference_mj"] / 1000)
        yield from (devices, p95, joules, p95_median, joules_median)

    def _monitor(self) -> Iterator[Metric]:
        stats = self.view.stats.as_dict()
        messages = Metric("edgefleet_monitor_messages", "Messages the monitor took in", "counter")
        messages.add_sample("edgefleet_monitor_messages_total", {}, float(stats["messages"]))
        lag = GaugeMetricFamily("edgefleet_monitor_telemetry_lag_p99_seconds", "p99 of telemetry's receipt "
                                "minus the device's own time stamp, over recent messages")
        if stats["lag_p99_s"] is not None:
            lag.add_metric([], stats["lag_p99_s"])
        yield from (messages, lag)


def wants_native(accept: str) -> bool:
    """An Accept header asking for OpenMetrics 2.0 or later (prometheus_client writes native
    histograms there only)."""
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        if fields[0] != "application/openmetrics-text":
            continue
        version = next((f.split("=", 1)[1] for f in fields[1:] if f.startswith("version=")), "")
        major = version.split(".")[0]
        if major.isdigit() and int(major) >= 2:
            return True
    return False


def serve(view: FleetView, address: str) -> Any:
    """Serve the metrics at http://ADDRESS/metrics ([HOST]:PORT; no host: every interface) in
    a thread of its own; returns the server (shutdown() stops it)."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import CollectorRegistry, make_wsgi_app

    apps = {}
    for with_native in (False, True):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(FleetCollector(view, with_native))
        apps[with_native] = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        return apps[wants_native(environ.get("HTTP_ACCEPT", ""))](environ, start_response)

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # a scrape every few seconds is no news
            pass

    host, _, port = address.rpartition(":")
    server = make_server(host or "0.0.0.0", int(port), app, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="prometheus", daemon=True).start()
    return server
