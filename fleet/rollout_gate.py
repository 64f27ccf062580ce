"""A rollout's gate: the terms a new version must meet on each device before it goes further,
against the figures the previous version had on the same device.

    p95_ms<=1.2x, mj_per_inference<=1.1x, selftest=pass, errors=0

Latency terms (p50_ms, p95_ms, p99_ms) read the new version's latency histogram (every
inference since the device activated it) against the previous version's; `mj_per_inference`
the energy per inference of the device's latest telemetry window against the previous
version's latest; `selftest` the device's self-test of the new bundle;
`errors` the new version's error count. `1.2x` is relative to the previous version's figure,
a bare number absolute (ms, mJ, a count). A figure a device does not have (no power sensor or
estimate, no previous figure) leaves its term `unknown`: it does not hold the rollout back
and every decision records it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

METRICS = ("p50_ms", "p95_ms", "p99_ms", "mj_per_inference", "selftest", "errors")
_TERM = re.compile(r"\s*([a-z0-9_]+)\s*(<=|<|==|=)\s*([0-9.]+x?|pass)\s*")


class GateError(ValueError):
    """A gate that cannot be read; the message says which term and how to write it."""


@dataclass(frozen=True)
class Term:
    metric: str
    op: str  # "<=", "<" or "="
    value: float | str  # a number, or "pass"
    relative: bool = False

    def __str__(self) -> str:
        value = self.value if isinstance(self.value, str) else f"{self.value:g}"
        return f"{self.metric}{self.op}{value}{'x' if self.relative else ''}"

    def judge(self, new: Any, old: Any = None) -> str:
        """'pass', 'fail' or 'unknown' for the new version's figure NEW (and the old one OLD)."""
        if self.metric == "selftest":
            return "unknown" if new is None else "pass" if new is True else "fail"
        if new is None or (self.relative and not old):
            return "unknown"
        assert isinstance(self.value, float)
        bound = self.value * old if self.relative else self.value
        ok = new <= bound if self.op == "<=" else new < bound if self.op == "<" else new == bound
        return "pass" if ok else "fail"


def parse_gate(text: str) -> tuple[Term, ...]:
    terms = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = _TERM.fullmatch(part)
        if not m or m.group(1) not in METRICS:
            raise GateError(f"gate term {part!r}: write METRIC<=VALUE, METRIC<=FACTORx or selftest=pass, "
                            f"with METRIC one of {', '.join(METRICS)}")
        metric, op, raw = m.group(1), "=" if m.group(2) == "==" else m.group(2), m.group(3)
        if metric == "selftest":
            if raw != "pass" or op != "=":
                raise GateError(f"gate term {part!r}: the self-test term is selftest=pass")
            terms.append(Term(metric, op, "pass"))
            continue
        if raw == "pass":
            raise GateError(f"gate term {part!r}: {metric} takes a number or a factor such as 1.2x")
        relative = raw.endswith("x")
        if relative and metric == "errors":
            raise GateError(f"gate term {part!r}: errors is a count (errors=0, errors<=3), not a factor")
        try:
            value = float(raw.rstrip("x"))
        except ValueError:
            raise GateError(f"gate term {part!r}: {raw!r} is not a number") from None
        terms.append(Term(metric, op, value, relative))
    if not terms:
        raise GateError("the gate is empty: give at least one term, e.g. selftest=pass")
    return tuple(terms)


def judge(terms: tuple[Term, ...], new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """Each term's verdict on one device with its figures; `holds` unless a term failed."""
    verdicts = {str(t): {"verdict": t.judge(new.get(t.metric), old.get(t.metric)),
                         "new": new.get(t.metric), "old": old.get(t.metric)} for t in terms}
    return {"holds": all(v["verdict"] != "fail" for v in verdicts.values()), "terms": verdicts}
