"""Idle is zero load: a fresh window without requests shrinks the fleet; only stale or missing
scrapes hold it (fail-static). Table-driven over the pure policy (tests/policy_cases.py)."""

from __future__ import annotations

from typing import Any

import pytest

from phoenix_operator.control.policy import PolicyState, decide
from policy_cases import SteppedFleet, make_fleet, make_obs, make_params

#: A window in which nothing arrived: counters fresh and standing still, so no TTFT, no queue.
IDLE: dict[str, Any] = {
    "ttft": None,
    "rate": 0.0,
    "pending": 0.0,
    "queue": None,
    "compute": None,
    "batch": None,
    "util": 0.0,
}


@pytest.mark.parametrize(
    ("case", "obs", "usable", "says"),
    [
        ("idle window", IDLE, True, "idle"),
        ("stale scrape", IDLE | {"stale": True}, False, "fail-static"),
        ("counters missing", IDLE | {"rate": None}, False, "fail-static"),
        ("requests stuck in the queue", IDLE | {"pending": 5.0}, False, "fail-static"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_one_window(case: str, obs: dict[str, Any], usable: bool, says: str) -> None:
    observation = make_obs(15.0, **obs)
    assert observation.usable is usable, case
    decision, _ = decide(make_params(), observation, make_fleet(4), PolicyState(), 15.0)
    assert says in decision.reason, decision.reason
    assert decision.batching is None  # nothing to judge a batching step by


@pytest.mark.parametrize(
    ("case", "params", "min_replicas", "within_s"),
    [
        ("capacity prior, 120 s window", {}, 1, 600.0),
        ("min 2", {"min_replicas": 2}, 2, 600.0),
        # Without probing: with it, the busy phase's deep slack (TTFT 0.1x target) already
        # releases a replica, so 5 were never "needed" and the window is not the thing measured.
        (
            "no capacity prior (never learned)",
            {"initial_capacity_rps": None, "capacity_probing": False},
            1,
            600.0,
        ),
        ("longer window", {"scale_down_stabilization_s": 300.0}, 1, 900.0),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_idle_fleet_scales_down_to_min_after_the_window(
    case: str, params: dict[str, Any], min_replicas: int, within_s: float
) -> None:
    fleet = SteppedFleet(make_params(**params), desired=5)
    for _ in range(8):  # busy first: 40 req/s needs the 5 replicas (10 req/s each, at 90 %)
        fleet.step(rate=40.0)
    busy_until = fleet.now
    while fleet.now - busy_until < within_s and fleet.desired > min_replicas:
        fleet.step(**IDLE)
    assert fleet.desired == min_replicas, (case, fleet.desired, fleet.decisions[-1][1].reason)
    idle_decisions = [d for t, d in fleet.decisions if t > busy_until]
    first_down = next(t for t, d in fleet.decisions if t > busy_until and d.action == "scale-down")
    # Never before the stabilisation window has passed since the fleet was last needed.
    assert first_down - busy_until >= fleet.params.scale_down_stabilization_s - fleet.params.interval_s
    assert all(d.action in ("hold", "scale-down") for d in idle_decisions)
    assert all("fail-static" not in d.reason for d in idle_decisions)
    assert any("idle" in d.reason for d in idle_decisions if d.action == "scale-down")


def test_stale_scrapes_hold_the_fleet_however_long() -> None:
    fleet = SteppedFleet(make_params(), desired=6)
    for _ in range(8):
        fleet.step(rate=40.0)
    for _ in range(60):
        decision = fleet.step(**(IDLE | {"stale": True}))
        assert decision.action == "hold" and "fail-static" in decision.reason
    assert fleet.desired == 6


def test_traffic_after_idle_scales_up_again() -> None:
    fleet = SteppedFleet(make_params(), desired=4)
    for _ in range(60):
        fleet.step(**IDLE)
    assert fleet.desired == 1
    fleet.step(rate=60.0, ttft=4.0)
    assert fleet.desired >= 5
