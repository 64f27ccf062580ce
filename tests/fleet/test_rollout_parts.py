"""The parts of a rollout that need no broker: reading gates and stages, judging figures,
and the state file that a killed operator process leaves behind."""

from __future__ import annotations

import pytest

from edgefleet.fleet.rollout import parse_stages
from edgefleet.fleet.rollout_gate import GateError, judge, parse_gate
from edgefleet.fleet.rollout_state import RolloutState, RolloutStore


def test_the_documented_gate_reads_and_judges_against_the_previous_figures():
    terms = parse_gate("p95_ms<=1.2x, mj_per_inference<=1.1x, selftest=pass, errors=0")
    assert [str(t) for t in terms] == ["p95_ms<=1.2x", "mj_per_inference<=1.1x", "selftest=pass", "errors=0"]
    old = {"p95_ms": 2.0, "mj_per_inference": 10.0}
    ok = judge(terms, {"p95_ms": 2.3, "mj_per_inference": 10.9, "selftest": True, "errors": 0}, old)
    assert ok["holds"] and {v["verdict"] for v in ok["terms"].values()} == {"pass"}
    slow = judge(terms, {"p95_ms": 2.5, "mj_per_inference": 10.0, "selftest": True, "errors": 0}, old)
    assert not slow["holds"] and slow["terms"]["p95_ms<=1.2x"] == {"verdict": "fail", "new": 2.5, "old": 2.0}
    # no power figure on either side: unknown, recorded, not holding the rollout back
    blind = judge(terms, {"p95_ms": 2.0, "mj_per_inference": None, "selftest": True, "errors": 0},
                  {"p95_ms": 2.0})
    assert blind["holds"] and blind["terms"]["mj_per_inference<=1.1x"]["verdict"] == "unknown"
    assert not judge(terms, {"selftest": False}, old)["holds"]
    assert judge(parse_gate("p99_ms<5,errors<=3"), {"p99_ms": 4.0, "errors": 3}, {})["holds"]


@pytest.mark.parametrize("gate, says", [
    ("", "empty"), ("p95<=1.2x", "METRIC"), ("selftest=fail", "selftest=pass"), ("errors<=2x", "count"),
    ("p95_ms<=pass", "number"), ("p95_ms>=1.2x", "METRIC"),
])
def test_a_gate_that_cannot_be_read_says_how_to_write_it(gate, says):
    with pytest.raises(GateError, match=says):
        parse_gate(gate)


def test_stages_rise_to_100_percent_and_cover_at_least_one_device():
    assert parse_stages("10%,50%,100%") == [0.1, 0.5, 1.0]
    for wrong in ("50%,10%,100%", "10%,50%", "0%,100%", "ten,100%", ""):
        with pytest.raises(ValueError, match="rising percentages"):
            parse_stages(wrong)
    state = RolloutState("r", {}, "g", "p", [0.1, 0.5, 1.0], "selftest=pass", 1.0,
                         [f"d{n}" for n in range(6)], {})
    assert [state.stage_size(k) for k in range(3)] == [1, 3, 6]


def test_a_request_from_another_process_survives_the_runner_saving_its_state(tmp_path):
    store = RolloutStore(tmp_path)
    state = RolloutState("r-1", {}, "g", "p", [1.0], "selftest=pass", 1.0, ["d1"], {})
    store.save(state)
    store.request("r-1", "pause")
    state.phase = "baking"
    store.save(state)  # the runner's copy had no request: the one on disk is kept
    assert store.load("r-1").request == "pause" and store.load("r-1").phase == "baking"
    assert store.take_request(state) == "pause" and store.load("r-1").request is None
    with pytest.raises(KeyError, match="rollout list"):
        store.load("nope")
    with pytest.raises(KeyError):
        store.path("../escape")
    assert [s.id for s in store.all()] == ["r-1"]
