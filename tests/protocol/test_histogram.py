"""The telemetry latency histogram: Prometheus native-histogram buckets that add up across
devices, quantiles within the bucket resolution, and strict parsing of what devices send."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from edgefleet.protocol.histogram import Histogram, HistogramError, bucket_bounds, bucket_index


def _of(values) -> Histogram:
    h = Histogram()
    for v in values:
        h.add(float(v))
    return h


def test_bucket_i_holds_values_above_the_previous_power_of_the_base_up_to_its_own():
    for value in (1e-5, 3.7e-4, 0.0123, 1.0, 2.0, 42.0):
        low, high = bucket_bounds(bucket_index(value))
        assert low < value <= high * (1 + 1e-12)
        assert high / low == pytest.approx(2 ** (1 / 8))
    assert bucket_index(1.0) == 0 and bucket_index(2.0) == 8  # schema 3: 8 buckets per doubling


def test_quantiles_are_within_the_bucket_resolution_of_the_exact_ones():
    rng = np.random.default_rng(1)
    latencies = rng.lognormal(mean=math.log(0.004), sigma=0.6, size=5000)  # about 4 ms, a long tail
    h = _of(latencies)
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(latencies, q))
        assert h.quantile(q) == pytest.approx(exact, rel=0.05), q
    assert h.quantile(1.0) == pytest.approx(latencies.max())
    assert h.count == 5000 and h.sum_s == pytest.approx(latencies.sum())


def test_two_devices_histograms_merge_into_the_histogram_of_all_their_values():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0.001, 0.01, 300), rng.uniform(0.005, 0.05, 200)
    merged = _of(a).merge(_of(b))
    assert merged.buckets == _of(np.concatenate([a, b])).buckets and merged.count == 500


def test_a_finer_schema_is_reduced_to_the_coarser_one_when_merged():
    rng = np.random.default_rng(3)
    values = rng.uniform(0.001, 0.1, 400)
    fine, coarse = Histogram(schema=3), Histogram(schema=1)
    for v in values:
        fine.add(float(v))
        coarse.add(float(v))
    merged = fine.merge(Histogram(schema=1))
    assert merged.schema == 1 and merged.buckets == coarse.buckets


def test_a_histogram_survives_its_json_form():
    h = _of([0.002, 0.003, 0.003, 0.5, 0.0])
    again = Histogram.from_dict(h.as_dict())
    assert (again.buckets, again.count, again.schema) == (h.buckets, h.count, h.schema)
    assert again.sum_s == pytest.approx(h.sum_s) and again.max_s == pytest.approx(h.max_s)
    assert again.zero_count == 1


@pytest.mark.parametrize("payload, reason", [
    ([1, 2], "expected an object"),
    ({"schema": 9, "count": 0, "buckets": []}, "schema"),
    ({"schema": True, "count": 0, "buckets": []}, "schema"),
    ({"schema": 3, "count": 2, "buckets": [[1, 1]]}, "count must be the sum"),
    ({"schema": 3, "count": 1, "buckets": [[1, -1], [2, 2]]}, "[index, count]"),
    ({"schema": 3, "count": 1, "buckets": [[1.5, 1]]}, "[index, count]"),
    ({"schema": 3, "count": 1, "buckets": [[1, 1]], "sum_s": float("nan")}, "finite"),
    ({"schema": 3, "count": 401, "buckets": [[i, 1] for i in range(401)]}, "at most 400"),
])
def test_a_malformed_histogram_is_refused_with_the_field_named(payload, reason):
    with pytest.raises(HistogramError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        Histogram.from_dict(payload)


def test_several_quantiles_in_one_pass_equal_each_read_alone():
    rng = random.Random(7)
    qs = (0.5, 0.95, 0.99, 0.0, 1.0, 0.25)
    for _ in range(300):
        h = Histogram()
        for _ in range(rng.randint(0, 60)):
            h.add(rng.choice([0.0, rng.lognormvariate(-6, 1)]))
        assert h.quantiles(qs) == [h.quantile(q) for q in qs]
