"""Phoenix's load forecast over the warm-up: time scales, trend significance, steps, learning.

The deployment is tests/policy_cases.py's (10 req/s per replica in request-count mode, 90 %
target, capacity as the ceiling for an unconfirmed minute or window). Loads are fed through
``with_state(loads=...)`` as the history the policy would have recorded every 15 s.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from phoenix_operator.api.models import PhoenixDeploymentSpec
from phoenix_operator.control.policy import (
    PolicyParams,
    PolicyState,
    _rising_slope,
    decide,
)
from policy_cases import make_fleet, make_obs, make_params, with_state


def _history(values: list[float], end: float, step: float = 15.0) -> tuple[tuple[float, float], ...]:
    """Loads recorded every ``step`` seconds, the last one ``step`` before ``end``."""
    n = len(values)
    return tuple((end - (n - i) * step, v) for i, v in enumerate(values))


def _decide(obs: dict[str, Any], state: PolicyState, now: float, desired: int = 4, **params: Any) -> Any:
    params.setdefault("tune_batching", False)
    return decide(make_params(**params), make_obs(now, **obs), make_fleet(desired), state, now)


def test_replica_startup_seconds_is_the_warm_up_horizon() -> None:
    spec = PhoenixDeploymentSpec.model_validate(
        {
            "model": {"name": "m", "backend": "vllm", "maxBatchSize": 64, "repository": {"uri": "s3://m/m"}},
            "autoscaling": {"mode": "auto", "prometheusUrl": "http://p:9090", "replicaStartupSeconds": 240},
        }
    )
    assert PolicyParams.from_spec(spec).warmup_s == 240.0
    auto = spec.autoscaling.model_copy(update={"replica_startup_seconds": 120})
    assert PolicyParams.from_spec(spec.model_copy(update={"autoscaling": auto})).warmup_s == 120.0


def test_a_noisy_flat_load_has_no_significant_trend() -> None:
    rng = np.random.default_rng(3)
    points = tuple((15.0 * i, 30.0 + float(rng.normal(0, 3))) for i in range(16))
    assert _rising_slope(points, 0.9) == 0.0
    # Without the significance test the median slope of noise is taken as it is.
    assert _rising_slope(points, 0.0) != 0.0
    ramp = tuple((t, v + 0.05 * t) for t, v in points)  # +0.75 req/s per 15 s
    assert _rising_slope(ramp, 0.9) == pytest.approx(0.05, abs=0.02)
    assert _rising_slope(((0.0, 1.0),), 0.9) == 0.0


def test_a_climbing_load_is_extrapolated_over_the_warm_up() -> None:
    # Ten minutes of a steady climb, 26 -> 36 req/s (1/60 req/s per s): over the 135 s warm-up
    # it adds 2.3 req/s, so the sustained 34 req/s plans as 36.3 at 90 %: a 5th replica now,
    # which the load alone (34 / 0.9 = 37.8 < 40) would not order yet.
    values = [26.0 + 10.0 * i / 40 for i in range(40)]
    state = with_state(loads=_history(values, 600.0), capacity=10.0)
    decision, _ = _decide({"rate": 36.0}, state, 600.0)
    assert decision.metrics["load_trend"] == pytest.approx(135 / 60, rel=0.1)
    assert "(climbing)" in decision.reason
    assert decision.action == "scale-up" and decision.replicas == 5
    flat = with_state(loads=_history([34.0] * 40, 600.0), capacity=10.0)
    assert _decide({"rate": 34.0}, flat, 600.0)[0].replicas is None


def test_a_plateau_swing_is_not_extrapolated() -> None:
    # A plateau at 30 req/s whose last two minutes swing up to 34: the swing rises, but the
    # last ten minutes do not climb, so no trend is added and 4 replicas (34 / 40) hold.
    values = [30.0] * 32 + [30.0 + 4.0 * i / 7 for i in range(8)]
    state = with_state(loads=_history(values, 600.0), capacity=10.0)
    decision, _ = _decide({"rate": 34.0}, state, 600.0)
    assert decision.metrics["load_trend"] == 0.0
    assert decision.replicas is None


@pytest.mark.parametrize(
    ("minute", "sustained", "expected"),
    [
        (38.0, 30.0, None),  # a minute at 95 % of capacity, the sustained load at 75 %: absorbed
        (38.0, 37.0, 5),  # the sustained load above 90 %: headroom for the warm-up
        (41.0, 30.0, 5),  # the minute above capacity: the queue would grow
    ],
)
def test_each_time_scale_has_its_utilisation(minute: float, sustained: float, expected: int | None) -> None:
    # 4 minutes of history: 12 points at the sustained level, then 4 at the minute's level.
    older = (16 * sustained - 4 * minute) / 12
    state = with_state(loads=_history([older] * 12 + [minute] * 3, 240.0), capacity=10.0)
    decision, _ = _decide({"rate": minute}, state, 240.0)
    assert decision.replicas == expected, decision.reason


def test_a_burst_within_the_usual_spread_orders_nothing_but_a_step_does() -> None:
    # A bursty 30 req/s (windows alternate 22 and 38, sd 8.3) on 4 x 10 req/s.
    state = with_state(loads=_history([22.0, 38.0] * 8, 240.0), capacity=10.0)
    usual, _ = _decide({"rate": 41.0}, state, 240.0)  # above capacity, but 1.3 sd: usual
    assert usual.replicas is None, usual.reason
    step, _ = _decide({"rate": 60.0}, state, 240.0)  # 3.6 sd above the load's mean: a step
    assert step.action == "scale-up" and step.replicas == 6
    # Confirmed by a growing queue, even a usual window counts (at target utilisation).
    confirmed, _ = _decide({"rate": 41.0, "pending": 80.0}, with_state(loads=state.loads, pending=0.0), 240.0)
    assert confirmed.replicas == 5 and "confirmed by queue/TTFT" in confirmed.reason


def test_a_start_up_ramp_orders_nothing_on_a_capacity_learned_from_it() -> None:
    # The first windows after start: the rate window still fills, so the load reads as rising
    # (0.05 -> 0.31 req/s on one replica, TTFT with slack, no queue). Without a prior, capacity
    # is learned from these same windows' slack, a lower bound: no replica is ordered.
    def run(prior: float | None) -> list[Any]:
        params = make_params(initial_capacity_rps=prior, tune_batching=False, interval_s=5.0, max_replicas=4)
        state, now, decisions = PolicyState(), 0.0, []
        for rate in (0.05, 0.16, 0.22, 0.31):
            now += 5.0
            obs = make_obs(now, rate=rate, ttft=0.5, ready=1, util=0.3)
            decision, state = decide(params, obs, make_fleet(1), state, now)
            decisions.append(decision)
        return decisions

    assert all(d.replicas is None for d in run(None)), [d.reason for d in run(None)]
    # A known capacity (a load test's 0.2 req/s) still acts on the step at once.
    known = run(0.2)
    assert any(d.action == "scale-up" for d in known), [d.reason for d in known]


def test_under_overload_the_load_is_what_arrived_not_what_completed() -> None:
    # 4 replicas of 10 req/s complete 40 req/s while the queue grows from 0 to 300 in 15 s:
    # 60 req/s arrived. Completions alone would size for 40 (5 replicas); the arrivals and the
    # backlog they leave (300 queued and 5 req/s over 120 s more, drained within a minute: +15)
    # need 9. Capacity is still learned from what was served (10 per replica).
    state = with_state(
        loads=_history([40.0] * 4, 15.0), pending=0.0, pending_at=0.0, serving=4, capacity=10.0
    )
    decision, new_state = _decide({"rate": 40.0, "pending": 300.0, "ttft": 4.0}, state, 15.0)
    assert "load 60.00 req/s now" in decision.reason
    assert decision.action == "scale-up" and decision.replicas == 9, decision.reason
    assert "+15.00 backlog" in decision.reason
    assert new_state.capacity == pytest.approx(10.0) and new_state.pending_at == 15.0
    # A queue that drains counts too: arrivals below completions.
    draining, _ = _decide({"rate": 40.0, "pending": 0.0, "ttft": 0.3}, replace(state, pending=150.0), 15.0)
    assert "load 30.00 req/s now" in draining.reason


def test_a_window_a_replica_joined_during_teaches_no_capacity() -> None:
    # 4 replicas ready now, 3 at the previous decision: the queue grew while 3 carried the load,
    # so 36 req/s over 4 replicas says nothing about what one sustains.
    state = with_state(capacity=10.0, pending=0.0, serving=3)
    _, joined = _decide({"rate": 36.0, "ttft": 2.5, "pending": 80.0}, state, 15.0)
    assert joined.capacity == 10.0
    _, same = _decide(
        {"rate": 36.0, "ttft": 2.5, "pending": 80.0}, with_state(capacity=10.0, pending=0.0, serving=4), 15.0
    )
    assert same.capacity is not None and same.capacity < 10.0
    assert joined.serving == 4  # remembered for the next window


def test_one_window_above_capacity_with_slack_proves_no_capacity() -> None:
    # TTFT trails a burst: the minute's level, not the newest window, is the proof.
    state = with_state(loads=_history([30.0] * 3, 60.0), capacity=10.0, serving=4)
    _, new_state = _decide({"rate": 48.0, "ttft": 0.2}, state, 60.0)
    assert new_state.capacity == pytest.approx(10.0)


def test_a_feed_forward_scale_up_after_a_scale_down_does_not_grow_the_window() -> None:
    state = with_state(last_scale_down_at=100.0, recommendations=((100.0, 4),), capacity=10.0)
    decision, new_state = _decide({"rate": 43.0}, state, 160.0)  # no breach: the load alone
    assert decision.action == "scale-up"
    assert new_state.scale_down_window_s is None and "premature" not in decision.reason


def test_no_scale_down_while_the_load_climbs() -> None:
    # Ten minutes climbing from 10 to 16 req/s on 4 replicas: 2 would do now, but not yet.
    values = [10.0 + 6.0 * i / 39 for i in range(40)]
    state = with_state(loads=_history(values, 600.0), capacity=10.0, recommendations=((0.0, 2),))
    decision, _ = _decide({"rate": 16.0}, state, 600.0, scale_down_stabilization_s=0.0)
    assert decision.replicas is None
    assert "climbing over 600s" in decision.reason
    flat = with_state(loads=_history([16.0] * 40, 600.0), capacity=10.0, recommendations=((0.0, 2),))
    decision, _ = _decide({"rate": 16.0}, flat, 600.0, scale_down_stabilization_s=0.0)
    assert decision.action == "scale-down"


def test_the_reason_quotes_every_time_scale() -> None:
    state = with_state(loads=_history([30.0] * 16, 240.0), capacity=10.0)
    decision, _ = _decide({"rate": 30.0}, state, 240.0)
    text = decision.reason
    assert "30.00 req/s now, 30.00 over 60s, 30.00 over 240s" in text
    assert "planned at 90% (minute and newest window at 100%)" in text
    assert not math.isnan(decision.metrics["load_level"] or math.nan)
