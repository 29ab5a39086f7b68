"""Phoenix's control policy rule by rule: each named step of ``decide`` on its own, then ``decide``
naming the rule that decided.

The deployment (tests/policy_cases.py): 1-10 replicas, 10 req/s per replica (request-count mode),
TTFT p95 target 3 s, urgent class 1.5 s, 4 replicas serving 30 req/s with TTFT 0.3 s unless a
test says otherwise.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from phoenix_operator.control.policy import (
    REPLICA_RULES,
    BatchingTrial,
    FleetState,
    Plan,
    PolicyState,
    Recommendation,
    StepContext,
    batching,
    breach,
    decide,
    fail_static,
    feed_forward,
    hold,
    recommend,
    regret,
    scale,
    scale_down,
    stabilise,
)
from policy_cases import BATCHING, make_fleet, make_obs, make_params, with_state

#: Batching already at its widest delay, so the default steady case offers no batching step.
WIDE = replace(BATCHING, max_queue_delay_us=20_000, preferred_batch_sizes=(16,))


def _ctx(
    obs: dict[str, Any] | None = None,
    fleet: FleetState | None = None,
    state: PolicyState | None = None,
    now: float = 15.0,
    **params: Any,
) -> StepContext:
    fleet = fleet or make_fleet()
    obs = {"ready": fleet.ready_replicas, **(obs or {})}
    return StepContext(make_params(**params), make_obs(now, **obs), fleet, state or PolicyState(), now)


def _plan(ctx: StepContext, target: int, rule: str = "breach", reason: str = "why") -> Plan:
    return Plan(rule=rule, target=target, reason=reason, state=ctx.learned, metrics=ctx.metrics)


# --------------------------------------------------------------------------------------------
# fail-static


def test_fail_static_holds_on_stale_metrics_without_running_the_load_model() -> None:
    ctx = _ctx({"stale": True, "ttft": 9.0})
    decision = fail_static(ctx)
    assert decision is not None
    assert (decision.action, decision.rule, decision.replicas) == ("hold", "fail-static", None)
    assert decision.reason.startswith("fail-static: newest sample is 300.0s old")
    assert "load" not in decision.metrics and decision.metrics["ttft_p95_s"] == 9.0
    assert "assessment" not in vars(ctx)  # the load model never ran


def test_fail_static_names_the_missing_figure() -> None:
    decision = fail_static(_ctx({"ttft": None}))
    assert decision is not None and decision.reason == "fail-static: no data"


def test_fail_static_passes_usable_and_idle_metrics_on() -> None:
    assert fail_static(_ctx()) is None
    assert fail_static(_ctx({"ttft": None, "rate": 0.0, "pending": 0.0})) is None


# --------------------------------------------------------------------------------------------
# breach


def test_breach_passes_on_without_a_breach() -> None:
    assert breach(_ctx()) is None


def test_breach_adds_a_replica_at_least() -> None:
    rec = breach(_ctx({"ttft": 4.0, "pending": None}))
    assert rec is not None
    assert (rec.rule, rec.replicas, rec.record) == ("breach", 5, None)
    assert rec.reason.startswith("TTFT p95 4.00s at 1.33x the 3s target; load ")


def test_breach_names_the_urgent_class_first() -> None:
    by_class = {"urgent": 2.0, "standard": 4.0, "bulk": 4.0}
    rec = breach(_ctx({"ttft": 4.0, "pending": None, "by_class": by_class}))
    assert rec is not None and rec.reason.startswith("most urgent class urgent at 1.33x its 1.5s target")


def test_breach_of_a_class_alone_scales_up() -> None:
    rec = breach(_ctx({"ttft": 1.0, "by_class": {"urgent": 0.5, "standard": 1.0, "bulk": 4.5}}))
    assert rec is not None and rec.replicas == 5
    assert rec.reason.startswith("class bulk at 1.50x its target")


def test_breach_does_not_scale_twice_while_ordered_replicas_cover_the_load() -> None:
    rec = breach(_ctx({"ttft": 4.0, "pending": None}, make_fleet(6, ready=4)))
    assert rec is not None and rec.replicas == 6
    assert "2 warming replica(s) already cover the load" in rec.reason


def test_breach_holds_while_a_backlog_drains_on_enough_capacity() -> None:
    rec = breach(_ctx({"ttft": 5.0, "pending": 50.0}, state=with_state(pending=200.0)))
    assert rec is not None and rec.replicas == 4
    assert "the queue is draining (50 waiting)" in rec.reason


def test_an_urgent_breach_does_not_wait_for_a_draining_backlog() -> None:
    by_class = {"urgent": 2.0, "standard": 1.0, "bulk": 1.0}
    rec = breach(_ctx({"ttft": 5.0, "pending": 50.0, "by_class": by_class}, state=with_state(pending=200.0)))
    assert rec is not None and rec.replicas == 5


# --------------------------------------------------------------------------------------------
# feed-forward


def test_feed_forward_orders_what_the_load_needs() -> None:
    ctx = _ctx({"rate": 60.0})
    rec = feed_forward(ctx)
    assert rec is not None
    assert (rec.rule, rec.replicas) == ("feed-forward", 6)  # capacity learned up to 11.25 req/s
    assert rec.replicas == ctx.load.needed_up and rec.reason == ctx.up_text


def test_feed_forward_passes_on_when_the_fleet_covers_the_load() -> None:
    assert feed_forward(_ctx()) is None  # 30 req/s on 4 x 10
    assert feed_forward(_ctx({"rate": None})) is None  # no rate: no sizing


# --------------------------------------------------------------------------------------------
# scale-down


def test_scale_down_recommends_the_smaller_fleet_with_slack() -> None:
    rec = scale_down(_ctx({"rate": 10.0}))
    assert rec is not None
    assert (rec.rule, rec.replicas, rec.record) == ("scale-down", 2, None)
    assert rec.reason.startswith("TTFT p95 at 0.10x target leaves slack; load ")


def test_scale_down_says_idle_when_nothing_arrived() -> None:
    rec = scale_down(_ctx({"ttft": None, "rate": 0.0, "pending": 0.0}))
    assert rec is not None and rec.replicas == 0  # clamped to minReplicas later, by stabilise
    assert rec.reason.startswith("idle: no requests in the window")


def test_scale_down_passes_on_unless_the_load_fell() -> None:
    assert scale_down(_ctx()) is None
    assert scale_down(_ctx({"rate": 60.0})) is None


def test_scale_down_does_not_cancel_warming_replicas_the_ready_ones_cannot_replace() -> None:
    rec = scale_down(_ctx({"rate": 25.0}, make_fleet(6, ready=2)))
    assert rec is not None and rec.replicas == 6
    assert "4 replica(s) ordered are still warming up" in rec.reason


def test_scale_down_waits_while_load_rises_but_records_the_need() -> None:
    state = with_state(loads=((0.0, 5.0), (15.0, 5.0), (30.0, 5.0)))
    rec = scale_down(_ctx({"rate": 10.0}, state=state, now=45.0))
    assert rec is not None
    assert (rec.replicas, rec.record) == (4, 1)
    assert "but load is rising (10.00 vs 6.25): not scaling down" in rec.reason


def test_scale_down_needs_slack() -> None:
    rec = scale_down(_ctx({"rate": 10.0, "ttft": 2.5}))
    assert rec is not None and rec.replicas == 4
    assert rec.reason.endswith("but TTFT p95 (0.83x target) leaves no slack to scale down")


# --------------------------------------------------------------------------------------------
# the replica rules in order


def test_replica_rules_run_breach_then_feed_forward_then_scale_down() -> None:
    assert (breach, feed_forward, scale_down) == REPLICA_RULES


def test_recommend_takes_the_first_rule_that_applies() -> None:
    # A breach on a load that also needs more replicas: the breach is the one named. 60 req/s on
    # 4 x 10, plus the 20 req/s excess piling up for a 120 s warm-up and drained within a minute
    # (+40): 100 at 90 % -> 12.
    rec = recommend(_ctx({"ttft": 4.0, "rate": 60.0}))
    assert rec.rule == "breach" and rec.replicas == 12


def test_recommend_keeps_the_size_when_no_rule_applies() -> None:
    assert recommend(_ctx()) == Recommendation("hold", 4, "")


# --------------------------------------------------------------------------------------------
# stabilisation


def test_stabilise_passes_a_recommendation_the_windows_allow() -> None:
    ctx = _ctx()
    plan = stabilise(ctx, Recommendation("feed-forward", 7, "up"))
    assert (plan.rule, plan.target, plan.reason) == ("feed-forward", 7, "up")
    assert plan.state.recommendations == ((15.0, 4), (15.0, 7))  # a fresh loop starts with its size


def test_stabilise_holds_a_scale_down_inside_the_window() -> None:
    plan = stabilise(_ctx(), Recommendation("scale-down", 2, "down"))
    assert (plan.rule, plan.target) == ("stabilisation", 4)
    assert plan.reason == "down; held by the 120s scale-down window"


def test_stabilise_steps_down_a_quarter_of_the_fleet_per_interval() -> None:
    ctx = _ctx(fleet=make_fleet(8), state=with_state(recommendations=((0.0, 8),)), now=300.0)
    plan = stabilise(ctx, Recommendation("scale-down", 2, "down"))
    assert (plan.rule, plan.target) == ("stabilisation", 6)
    assert plan.reason == "down; stepping down to 6 (120s window, a quarter per interval)"


def test_stabilise_lets_a_scale_down_through_once_the_window_has_passed() -> None:
    ctx = _ctx(state=with_state(recommendations=((0.0, 4),)), now=300.0)
    plan = stabilise(ctx, Recommendation("scale-down", 3, "down"))
    assert (plan.rule, plan.target, plan.reason) == ("scale-down", 3, "down")


def test_stabilise_holds_a_scale_up_inside_the_scale_up_window() -> None:
    ctx = _ctx(state=with_state(recommendations=((0.0, 4),)), scale_up_stabilization_s=60.0)
    plan = stabilise(ctx, Recommendation("feed-forward", 6, "up"))
    assert (plan.rule, plan.target) == ("stabilisation", 4)
    assert plan.reason == "up; held by the 60s scale-up window"


def test_stabilise_keeps_the_bounds() -> None:
    # A rule asking past maxReplicas gets the cap and keeps its name...
    plan = stabilise(_ctx(), Recommendation("breach", 15, "up"))
    assert (plan.rule, plan.target) == ("breach", 10)
    # ...while a fleet above a lowered maxReplicas is brought back by the bounds themselves.
    plan = stabilise(_ctx(fleet=make_fleet(6), max_replicas=4), Recommendation("hold", 6, ""))
    assert (plan.rule, plan.target) == ("stabilisation", 4)


def test_stabilise_records_what_the_rule_asks_the_window_to_remember() -> None:
    plan = stabilise(_ctx(), Recommendation("scale-down", 4, "rising", record=0))
    assert plan.target == 4
    assert plan.state.recommendations[-1] == (15.0, 1)  # clamped to minReplicas


# --------------------------------------------------------------------------------------------
# regret


def test_regret_doubles_the_window_after_a_breach_soon_after_a_scale_down() -> None:
    ctx = _ctx({"ttft": 4.0, "pending": None}, state=with_state(last_scale_down_at=30.0), now=90.0)
    plan = regret(ctx, _plan(ctx, 5))
    assert plan.state.scale_down_window_s == 240.0
    assert plan.reason == "why; a scale-down 60s ago was premature: scale-down window 120s -> 240s"
    assert plan.metrics["scale_down_window_s"] == 240.0
    assert ctx.metrics["scale_down_window_s"] == 120.0  # the shared figures are left alone


def test_regret_counts_a_scale_down_at_time_zero_as_a_time() -> None:
    ctx = _ctx({"ttft": 4.0, "pending": None}, state=with_state(last_scale_down_at=0.0), now=60.0)
    plan = regret(ctx, _plan(ctx, 5))
    assert plan.reason == "why; a scale-down 60s ago was premature: scale-down window 120s -> 240s"


def test_regret_ignores_a_feed_forward_scale_up() -> None:
    ctx = _ctx({"rate": 60.0}, state=with_state(last_scale_down_at=0.0), now=60.0)
    plan = _plan(ctx, 7, rule="feed-forward")
    assert regret(ctx, plan) is plan


def test_regret_relaxes_the_window_after_a_quiet_spell() -> None:
    ctx = _ctx(state=with_state(scale_down_window_s=480.0, last_regret_at=0.0), now=2000.0)
    plan = regret(ctx, _plan(ctx, 4, rule="hold", reason=""))
    assert (plan.state.scale_down_window_s, plan.state.last_regret_at) == (240.0, 2000.0)


# --------------------------------------------------------------------------------------------
# scale, batching, hold


def test_scale_orders_a_new_target_and_notes_when() -> None:
    ctx = _ctx({"ttft": 4.0, "pending": None}, now=60.0)
    result = scale(ctx, _plan(ctx, 5))
    assert result is not None
    decision, state = result
    assert (decision.action, decision.summary, decision.replicas) == (
        "scale-up",
        "scale-up 4 -> 5 replicas",
        5,
    )
    assert decision.rule == "breach"
    assert (state.last_scale_at, state.warming_since, state.last_scale_down_at) == (60.0, 60.0, None)


def test_scale_down_is_noted_for_regret() -> None:
    ctx = _ctx({"rate": 10.0}, now=60.0)
    result = scale(ctx, _plan(ctx, 3, rule="scale-down"))
    assert result is not None
    decision, state = result
    assert decision.action == "scale-down" and state.last_scale_down_at == 60.0


def test_scale_passes_on_when_the_target_is_the_fleet() -> None:
    ctx = _ctx()
    assert scale(ctx, _plan(ctx, 4)) is None


def test_batching_widens_with_slack_on_a_stable_fleet() -> None:
    ctx = _ctx()
    decision, state = batching(ctx, _plan(ctx, 4, rule="hold"))
    assert decision is not None
    assert (decision.action, decision.rule) == ("batching", "batching")
    assert decision.batching is not None and decision.batching.max_queue_delay_us == 4000
    assert state.trial is not None and state.trial.direction == "widen"


@pytest.mark.parametrize(
    ("obs", "fleet", "params"),
    [
        ({}, make_fleet(), {"tune_batching": False}),
        ({}, make_fleet(6, ready=4), {}),  # replicas warming
        ({"ttft": None, "rate": 0.0, "pending": 0.0}, make_fleet(), {}),  # idle
    ],
)
def test_batching_waits_for_a_stable_serving_fleet(
    obs: dict[str, Any], fleet: FleetState, params: dict[str, Any]
) -> None:
    trial = BatchingTrial(applied_at=0.0, previous=BATCHING, ttft_before_s=0.1, direction="widen")
    ctx = _ctx(obs, fleet, state=with_state(trial=trial), now=60.0, **params)
    plan = _plan(ctx, fleet.desired_replicas, rule="hold")
    decision, state = batching(ctx, plan)
    assert decision is None and state is plan.state and state.trial == trial


def test_batching_reverts_a_step_that_worsened_ttft() -> None:
    widened = replace(BATCHING, max_queue_delay_us=4000)
    trial = BatchingTrial(applied_at=30.0, previous=BATCHING, ttft_before_s=0.3, direction="widen")
    ctx = _ctx({"ttft": 1.8}, make_fleet(batching=widened), with_state(trial=trial), now=60.0)
    decision, state = batching(ctx, _plan(ctx, 4, rule="hold"))
    assert decision is not None
    assert (decision.action, decision.rule, decision.batching) == ("revert-batching", "batching", BATCHING)
    assert state.trial is None and state.blocked == ("widen", 210.0)


def test_hold_explains_itself_from_the_load_and_the_worst_class() -> None:
    ctx = _ctx()
    decision = hold(ctx, _plan(ctx, 4, rule="hold", reason=""))
    assert (decision.action, decision.summary, decision.rule) == ("hold", "hold at 4 replicas", "hold")
    assert decision.reason.startswith("TTFT p95 0.30s (0.10x target) within band; load 30.00 req/s now")
    assert decision.reason.endswith("; worst class standard at 0.10x its target")


def test_hold_keeps_the_reason_and_rule_of_the_step_that_held() -> None:
    ctx = _ctx()
    decision = hold(ctx, _plan(ctx, 4, rule="stabilisation", reason="held by the window"))
    assert decision.rule == "stabilisation"
    assert decision.reason.startswith("held by the window; worst class")


# --------------------------------------------------------------------------------------------
# decide names the rule that decided


@pytest.mark.parametrize(
    ("rule", "obs", "fleet", "state", "params", "action", "replicas"),
    [
        ("fail-static", {"stale": True}, make_fleet(), None, {}, "hold", None),
        ("breach", {"ttft": 4.0, "pending": None}, make_fleet(), None, {}, "scale-up", 5),
        ("breach", {"ttft": 4.0, "pending": None}, make_fleet(6, ready=4), None, {}, "hold", None),
        ("feed-forward", {"rate": 60.0}, make_fleet(), None, {}, "scale-up", 6),
        (
            "scale-down",
            {"rate": 22.0},
            make_fleet(batching=WIDE),
            with_state(recommendations=((0.0, 4),)),
            {},
            "scale-down",
            3,
        ),
        (
            "scale-down",
            {"rate": 10.0, "ttft": 2.5},
            make_fleet(batching=WIDE),
            with_state(recommendations=((0.0, 4),)),
            {},
            "hold",
            None,
        ),
        ("stabilisation", {"rate": 10.0}, make_fleet(batching=WIDE), None, {}, "hold", None),
        ("stabilisation", {"ttft": 2.5}, make_fleet(6), None, {"max_replicas": 4}, "scale-down", 4),
        ("batching", {}, make_fleet(), None, {}, "batching", None),
        ("hold", {}, make_fleet(), None, {"tune_batching": False}, "hold", None),
    ],
)
def test_decide_names_the_rule_that_decided(
    rule: str,
    obs: dict[str, Any],
    fleet: FleetState,
    state: PolicyState | None,
    params: dict[str, Any],
    action: str,
    replicas: int | None,
) -> None:
    now = 300.0
    obs = {"ready": fleet.ready_replicas, **obs}
    decision, _ = decide(make_params(**params), make_obs(now, **obs), fleet, state or PolicyState(), now)
    assert (decision.rule, decision.action, decision.replicas) == (rule, action, replicas), decision
