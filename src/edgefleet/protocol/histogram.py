"""A latency histogram that devices send and the fleet side adds up across devices and versions.

The buckets are those of Prometheus' native (sparse, exponential) histograms: for a schema
s, bucket i holds the values in (b**(i-1), b**i] with b = 2**(2**-s); values at or below
zero go to a zero bucket. Two histograms of the same schema merge by adding counts per
index, with no boundaries to agree on first, and an exporter can hand the buckets to
Prometheus as they are (issue 11). Schema 3 (b = 1.0905) puts any quantile within 4.4 %
of the truth when taken at a bucket's geometric middle, at a few dozen buckets for the
latencies one model shows.

Written by hand: prometheus_client has no native histograms to reuse, and the scheme is
a logarithm and a dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SCHEMA = 3
MAX_BUCKETS = 400  # a parsed histogram with more is refused: no device needs that many


class HistogramError(ValueError):
    """A histogram payload that breaks the format (says which field)."""


def bucket_index(value: float, schema: int = SCHEMA) -> int:
    """The index of the bucket whose upper bound is the first at or above VALUE (> 0)."""
    return math.ceil(math.log2(value) * 2**schema)


def bucket_bounds(index: int, schema: int = SCHEMA) -> tuple[float, float]:
    base = 2 ** (2**-schema)
    return base ** (index - 1), base**index


@dataclass
class Histogram:
    """Counts of observations in seconds, by bucket index; `sum_s` for the mean."""

    schema: int = SCHEMA
    buckets: dict[int, int] = field(default_factory=dict)
    zero_count: int = 0
    count: int = 0
    sum_s: float = 0.0
    max_s: float = 0.0

    def add(self, seconds: float) -> None:
        if seconds > 0:
            i = bucket_index(seconds, self.schema)
            self.buckets[i] = self.buckets.get(i, 0) + 1
        else:
            self.zero_count += 1
        self.count += 1
        self.sum_s += seconds
        self.max_s = max(self.max_s, seconds)

    def merge(self, other: Histogram) -> Histogram:
        """A new histogram holding both (the finer schema is reduced to the coarser one)."""
        schema = min(self.schema, other.schema)
        merged = Histogram(schema=schema, zero_count=self.zero_count + other.zero_count,
                           count=self.count + other.count, sum_s=self.sum_s + other.sum_s,
                           max_s=max(self.max_s, other.max_s))
        for h in (self, other):
            shift = h.schema - schema  # 2**shift buckets of h make one of the merged schema
            for i, n in h.buckets.items():
                j = -((-i) >> shift)  # ceil(i / 2**shift): the coarse bucket holding h's bucket i
                merged.buckets[j] = merged.buckets.get(j, 0) + n
        return merged

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1) estimated at the geometric middle of its bucket, in seconds."""
        if not self.count:
            return None
        rank = q * self.count
        if rank >= self.count:
            return self.max_s  # the top is known exactly
        seen = self.zero_count
        if rank <= seen:
            return 0.0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if rank <= seen:
                low, high = bucket_bounds(i, self.schema)
                return min(math.sqrt(low * high), self.max_s) if self.max_s > 0 else math.sqrt(low * high)
        return self.max_s

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """quantile(q) for each of QS, in one pass over the buckets."""
        return [self.quantile(q) for q in qs] if len(qs) < 2 or not self.count else self._walk(qs)

    def _walk(self, qs: tuple[float, ...]) -> list[float | None]:
        order = sorted(range(len(qs)), key=qs.__getitem__)
        out: list[float | None] = [None] * len(qs)
        seen, k = self.zero_count, 0
        while k < len(order) and qs[order[k]] * self.count <= seen:
            out[order[k]] = 0.0 if qs[order[k]] < 1 else self.max_s
            k += 1
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            while k < len(order) and qs[order[k]] * self.count <= seen:
                out[order[k]] = self.quantile(qs[order[k]]) if qs[order[k]] >= 1 else self._middle(i)
                k += 1
        for j in order[k:]:
            out[j] = self.max_s
        return out

    def _middle(self, index: int) -> float:
        low, high = bucket_bounds(index, self.schema)
        return min(math.sqrt(low * high), self.max_s) if self.max_s > 0 else math.sqrt(low * high)

    def as_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "count": self.count, "sum_s": round(self.sum_s, 9),
                "max_s": round(self.max_s, 9), "zero_count": self.zero_count,
                "buckets": [[i, self.buckets[i]] for i in sorted(self.buckets)]}

    @classmethod
    def from_dict(cls, data: Any) -> Histogram:
        """Parse an untrusted payload (a device's telemetry); HistogramError says what is wrong."""
        if not isinstance(data, dict):
            raise HistogramError("latency histogram: expected an object")
        schema = data.get("schema")
        if not isinstance(schema, int) or isinstance(schema, bool) or not -4 <= schema <= 8:
            raise HistogramError("latency histogram: schema must be an integer from -4 to 8")
        pairs = data.get("buckets")
        if not isinstance(pairs, list) or len(pairs) > MAX_BUCKETS:
            raise HistogramError(f"latency histogram: buckets must be a list of at most {MAX_BUCKETS} pairs")
        buckets: dict[int, int] = {}
        for pair in pairs:
            if not (isinstance(pair, list) and len(pair) == 2 and all(_count(v, signed=True) for v in pair)
                    and pair[1] >= 0):
                raise HistogramError("latency histogram: each bucket is [index, count] of integers")
            buckets[pair[0]] = buckets.get(pair[0], 0) + pair[1]
        zero, count = data.get("zero_count", 0), data.get("count")
        if not _count(zero) or not _count(count) or count != zero + sum(buckets.values()):
            raise HistogramError("latency histogram: count must be the sum of the bucket counts")
        sum_s, max_s = data.get("sum_s", 0.0), data.get("max_s", 0.0)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in (sum_s, max_s)):
            raise HistogramError("latency histogram: sum_s and max_s must be finite numbers")
        return cls(schema, buckets, zero, count, float(sum_s), float(max_s))


def _count(value: Any, signed: bool = False) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and (signed or value >= 0)
