"""Phoenix's control policy, table-driven: one observation and fleet in, the expected decision out.

The deployment in most rows (tests/policy_cases.py): 1-10 replicas, 10 req/s per replica
(request-count mode, planned at 90 %, 100 % for an unconfirmed rise), TTFT p95 target 3 s, urgent
class 1.5 s, 4 replicas serving 30 req/s with TTFT 0.3 s unless a row says otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from phoenix_operator.api.models import PhoenixDeploymentSpec
from phoenix_operator.control.policy import (
    BatchingTrial,
    FleetState,
    PolicyParams,
    PolicyState,
    decide,
    within_bounds,
)
from phoenix_operator.render.tritonconfig import BatchingConfig
from policy_cases import BATCHING, SteppedFleet, make_fleet, make_obs, make_params, with_state


def _decide(
    obs: dict[str, Any] | None = None,
    fleet: FleetState | None = None,
    state: PolicyState | None = None,
    now: float = 15.0,
    **params: Any,
) -> Any:
    return decide(
        make_params(**params),
        make_obs(now, **(obs or {})),
        fleet or make_fleet(),
        state or PolicyState(),
        now,
    )


# --------------------------------------------------------------------------------------------
# replicas


@pytest.mark.parametrize(
    ("case", "obs", "fleet", "state", "action", "replicas", "says"),
    [
        ("steady load, TTFT in band", {}, make_fleet(), None, "batching", None, "slack"),
        (
            "TTFT breach, queue unknown: scale up in this interval",
            {"ttft": 4.0, "pending": None},
            make_fleet(),
            None,
            "scale-up",
            5,
            "1.33x the 3s target",
        ),
        (
            "TTFT breach with a growing queue",
            {"ttft": 4.0, "pending": 120.0},
            make_fleet(),
            with_state(pending=10.0),
            "scale-up",
            5,
            "backlog",
        ),
        (
            "urgent class breaches while overall TTFT is fine: handled first",
            {"ttft": 1.0, "by_class": {"urgent": 2.0, "standard": 1.0, "bulk": 1.0}},
            make_fleet(),
            None,
            "scale-up",
            5,
            "most urgent class urgent at 1.33x",
        ),
        (
            "urgent and overall breach: the urgent class is named",
            {"ttft": 4.0, "pending": None, "by_class": {"urgent": 2.0, "standard": 4.0, "bulk": 4.0}},
            make_fleet(),
            None,
            "scale-up",
            5,
            "most urgent class",
        ),
        (
            "breach while ordered replicas warm up and cover the load: no double scale-up",
            {"ttft": 4.0, "pending": None},
            make_fleet(6, ready=4),
            None,
            "hold",
            None,
            "not scaling twice",
        ),
        (
            "breach from a draining backlog with capacity for the load",
            {"ttft": 5.0, "pending": 50.0},
            make_fleet(),
            with_state(pending=200.0),
            "hold",
            None,
            "queue is draining",
        ),
        (
            "load rises past the fleet's capacity before any breach: feed-forward",
            {"rate": 40.0},
            make_fleet(),
            None,
            "scale-up",
            5,
            "needs 5",
        ),
        (
            "load sustained between 90 % and 100 % without queue or TTFT pressure: planned at 90 %",
            {"rate": 38.0},
            make_fleet(),
            with_state(loads=((0.0, 38.0),)),
            "scale-up",
            5,
            "needs 5",
        ),
        (
            "stale metrics: fail-static",
            {"stale": True, "ttft": 9.0},
            make_fleet(),
            None,
            "hold",
            None,
            "fail-static: newest sample",
        ),
        (
            "no TTFT data: fail-static",
            {"ttft": None},
            make_fleet(),
            None,
            "hold",
            None,
            "fail-static: no data",
        ),
        (
            "a fresh loop does not scale down at once (stabilization window)",
            {"rate": 10.0},
            make_fleet(batching=replace(BATCHING, max_queue_delay_us=20_000)),
            None,
            "hold",
            None,
            "held by the 120s scale-down window",
        ),
    ],
)
def test_replica_decisions(
    case: str,
    obs: dict[str, Any],
    fleet: FleetState,
    state: PolicyState | None,
    action: str,
    replicas: int | None,
    says: str,
) -> None:
    decision, _ = _decide(obs, fleet, state)
    assert decision.action == action, (case, decision)
    assert decision.replicas == replicas, (case, decision)
    assert says in decision.reason, (case, decision.reason)


def test_between_target_and_max_utilization_needs_confirmation() -> None:
    # 38 req/s on 4 x 10 req/s: 95 %. One window of it alone does not order a replica...
    decision, state = _decide({"rate": 38.0}, state=with_state(loads=((0.0, 30.0),)))
    assert decision.replicas is None
    # ...but a growing queue confirms it (and so would the 60 s mean crossing 90 %).
    decision, _ = _decide({"rate": 38.0, "pending": 60.0}, state=replace(state, pending=0.0), now=30.0)
    assert decision.action == "scale-up" and decision.replicas == 5
    assert "confirmed by queue/TTFT" in decision.reason


def test_scale_down_waits_for_the_window_then_steps_a_quarter() -> None:
    params = make_params()
    fleet = make_fleet(8, batching=replace(BATCHING, max_queue_delay_us=20_000, preferred_batch_sizes=(16,)))
    state = PolicyState()
    actions = []
    for now in range(15, 136, 15):
        decision, state = decide(params, make_obs(float(now), rate=10.0, ready=8), fleet, state, float(now))
        actions.append((now, decision.action, decision.replicas))
    # Seeded with 8 at t=15: held while the window still holds it, then down by a quarter.
    assert all(a == "hold" for t, a, _ in actions if t < 135), actions
    assert actions[-1] == (135, "scale-down", 6)


def test_no_scale_down_without_ttft_slack() -> None:
    state = with_state(recommendations=((0.0, 2),))
    decision, _ = _decide({"rate": 10.0, "ttft": 2.5}, make_fleet(8), state, now=300.0)
    assert decision.replicas is None
    assert "leaves no slack" in decision.reason


@pytest.mark.parametrize(
    ("params", "current", "expected"),
    [
        ({"max_replicas": 5}, 5, None),  # at maxReplicas: breach cannot add more
        ({"max_replicas": 10, "gpu_budget": 6, "gpus_per_replica": 2}, 3, None),  # budget: 6 GPUs / 2
        ({"max_replicas": 10, "gpu_budget": 6, "gpus_per_replica": 2}, 2, 3),
        ({"max_replicas": 4}, 6, 4),  # above a lowered maxReplicas: back within bounds at once
    ],
)
def test_replicas_stay_within_max_and_gpu_budget(
    params: dict[str, Any], current: int, expected: int | None
) -> None:
    decision, _ = _decide({"ttft": 6.0, "pending": None, "rate": 80.0}, make_fleet(current), **params)
    assert decision.replicas == expected, decision


def test_premature_scale_down_doubles_the_window() -> None:
    state = with_state(last_scale_down_at=100.0, recommendations=((100.0, 4),))
    decision, new_state = _decide({"ttft": 4.0, "pending": None}, state=state, now=160.0)
    assert decision.action == "scale-up"
    assert "was premature: scale-down window 120s -> 240s" in decision.reason
    assert new_state.scale_down_window_s == 240.0
    assert decision.metrics["scale_down_window_s"] == 240.0


def test_work_model_counts_tokens() -> None:
    params = dict(
        initial_capacity_rps=None,
        prompt_token_cost_s=2e-5,
        output_token_cost_s=1.5e-4,
        kv_token_cost_s=2.4e-7,
        tune_batching=False,
    )
    decision, _ = _decide({"rate": 30.0, "mean_prompt_tokens": 1000.0, "mean_output_tokens": 200.0}, **params)
    work = 2e-5 * 1000 + 1.5e-4 * 200 + 2.4e-7 * 1000 * 200
    assert decision.metrics["work_per_request_s"] == pytest.approx(work)
    assert decision.metrics["load"] == pytest.approx(30.0 * work)  # 2.94 replicas of work: 4 do
    assert decision.action == "hold" and "replicas of work" in decision.reason
    # The same request rate with long answers is 5.5 replicas of work on 4 replicas. With TTFT
    # confirming the overload, 1.5 replicas of work also pile up for the 120 s until new replicas
    # serve, drained within the minute after: +3.0, 8.5 at 90 % -> 10.
    decision, _ = _decide(
        {"rate": 30.0, "ttft": 2.0, "mean_prompt_tokens": 1000.0, "mean_output_tokens": 420.0}, **params
    )
    assert decision.replicas == 10
    assert "+3.03 backlog" in decision.reason


def test_a_growing_queue_teaches_a_lower_capacity() -> None:
    state = with_state(pending=0.0, capacity=10.0)
    _, new_state = _decide({"ttft": 2.5, "rate": 36.0, "pending": 80.0}, state=state)
    assert new_state.capacity is not None and new_state.capacity < 10.0


def test_every_decision_quotes_its_numbers() -> None:
    for obs in (
        {},
        {"ttft": 4.0, "pending": None},
        {"rate": 40.0},
        {"rate": 10.0},
        {"ttft": 2.0, "queue": 0.5},
    ):
        decision, _ = _decide(obs)
        assert re.search(r"\d", decision.reason), decision
        assert decision.metrics["ttft_p95_s"] is not None


def test_from_spec_reads_bounds_and_classes() -> None:
    spec = PhoenixDeploymentSpec.model_validate(
        {
            "model": {"name": "m", "backend": "vllm", "maxBatchSize": 64, "repository": {"uri": "s3://m/m"}},
            "triton": {"gpusPerReplica": 2},
            "batching": {"bounds": {"maxPreferredBatchSize": 32, "maxQueueDelayMicroseconds": 8000}},
            "priority": {
                "defaultClass": "standard",
                "classes": [
                    {"name": "standard", "level": 2, "ttftTargetSeconds": 3},
                    {"name": "urgent", "level": 1, "ttftTargetSeconds": 1},
                ],
            },
            "autoscaling": {
                "mode": "auto",
                "minReplicas": 2,
                "maxReplicas": 9,
                "gpuBudget": 12,
                "prometheusUrl": "http://p:9090",
                "ttftP95TargetSeconds": 2.5,
            },
        }
    )
    params = PolicyParams.from_spec(spec, warmup_s=90.0)
    assert (params.min_replicas, params.max_replicas, params.replica_cap) == (2, 9, 6)
    assert list(params.class_targets) == ["urgent", "standard"]  # most urgent first
    assert params.urgent_class == "urgent"
    assert params.ttft_target_s == 2.5 and params.warmup_s == 90.0
    assert params.max_preferred_batch_size == 32 and params.max_queue_delay_us == 8000
    assert params.inflight_batching is True  # vLLM batches in flight


def _spec(**autoscaling: Any) -> PhoenixDeploymentSpec:
    return PhoenixDeploymentSpec.model_validate(
        {
            "model": {"name": "m", "backend": "vllm", "maxBatchSize": 64, "repository": {"uri": "s3://m/m"}},
            "autoscaling": {"mode": "auto", "prometheusUrl": "http://p:9090", **autoscaling},
        }
    )


def test_from_spec_takes_the_measured_capacity_as_its_prior() -> None:
    measured = {"requestsPerSecond": 9.5, "promptTokens": 1100.0, "outputTokens": 210.0}
    params = PolicyParams.from_spec(_spec(replicaCapacity=measured))
    assert params.initial_capacity_rps == 9.5 and params.has_capacity_mix
    assert (params.capacity_prompt_tokens, params.capacity_output_tokens) == (1100.0, 210.0)
    assert not params.has_work_model
    bare = PolicyParams.from_spec(_spec())
    assert bare.initial_capacity_rps is None and not bare.has_capacity_mix
    # A capacity without its mix is a plain request-rate prior.
    plain = PolicyParams.from_spec(_spec(replicaCapacity={"requestsPerSecond": 4}))
    assert plain.initial_capacity_rps == 4.0 and not plain.has_capacity_mix
    # Without the load test's other figures the defaults' guesses stand.
    assert (params.prompt_token_weight, params.target_utilization, params.max_utilization) == (0.2, 0.9, 1.0)


def test_from_spec_takes_the_cliff_and_the_prompt_weight_a_load_test_measured() -> None:
    measured = {
        "requestsPerSecond": 9.4,
        "saturationRequestsPerSecond": 10.0,
        "promptTokens": 1100.0,
        "outputTokens": 210.0,
        "promptTokenWeight": 0.07,
    }
    params = PolicyParams.from_spec(_spec(replicaCapacity=measured))
    assert params.prompt_token_weight == 0.07
    assert params.target_utilization == 1.0 and params.max_utilization == pytest.approx(10.0 / 9.4)
    # A replica whose throughput holds far past its TTFT cliff still waits for the queue past 1.5x.
    wide = PolicyParams.from_spec(
        _spec(replicaCapacity={"requestsPerSecond": 4, "saturationRequestsPerSecond": 40})
    )
    assert wide.max_utilization == 1.5 and wide.prompt_token_weight == 0.2


@pytest.mark.parametrize(
    ("capacity", "error"),
    [
        ({"requestsPerSecond": 0}, "greater than 0"),
        ({"requestsPerSecond": -1}, "greater than 0"),
        ({}, "requestsPerSecond"),
        ({"requestsPerSecond": 5, "promptTokens": 900}, "promptTokens and outputTokens go together"),
        ({"requestsPerSecond": 5, "rps": 5}, "rps"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_bad_replica_capacity_is_rejected_with_the_field_named(
    capacity: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        _spec(replicaCapacity=capacity)


def test_the_crd_validates_replica_capacity_like_pydantic() -> None:
    from phoenix_operator.api.crdgen import build_crd

    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    block = schema["properties"]["spec"]["properties"]["autoscaling"]["properties"]["replicaCapacity"]
    rps = block["properties"]["requestsPerSecond"]
    assert (
        rps["minimum"] == 0 and rps["exclusiveMinimum"] is True and block["required"] == ["requestsPerSecond"]
    )
    rules = [v["rule"] for v in block["x-kubernetes-validations"]]
    assert rules == [
        "has(self.promptTokens) == has(self.outputTokens)",
        "!has(self.promptTokenWeight) || has(self.promptTokens)",
        "!has(self.saturationRequestsPerSecond)"
        " || self.saturationRequestsPerSecond >= self.requestsPerSecond",
    ]


def test_load_is_weighed_against_the_mix_the_capacity_was_measured_at() -> None:
    """10 req/s per replica measured at 1000 prompt / 200 output tokens: the same request rate of
    twice as long answers is more load, so more replicas."""
    mix: dict[str, Any] = {
        "initial_capacity_rps": 10.0,
        "capacity_prompt_tokens": 1000.0,
        "capacity_output_tokens": 200.0,
        "tune_batching": False,
    }
    same, _ = _decide({"rate": 30.0, "mean_prompt_tokens": 1000.0, "mean_output_tokens": 200.0}, **mix)
    assert same.metrics["load"] == pytest.approx(30.0) and same.action == "hold"
    assert "req/s at the measured mix" in same.reason
    longer, _ = _decide(
        {"rate": 30.0, "ttft": 2.0, "mean_prompt_tokens": 1000.0, "mean_output_tokens": 400.0}, **mix
    )
    weight = (400 + 0.2 * 1000) / (200 + 0.2 * 1000)  # 1.5 requests of the measured mix each
    assert longer.metrics["load"] == pytest.approx(30.0 * weight)
    assert longer.action == "scale-up" and longer.replicas is not None and longer.replicas > 5
    # Without token metrics the request rate counts as the measured mix.
    blind, _ = _decide({"rate": 30.0}, **mix)
    assert blind.metrics["load"] == pytest.approx(30.0)


def test_a_measured_cliff_lets_a_plateau_run_between_capacity_and_saturation() -> None:
    """Four replicas measured at 10 req/s within the target and 10.75 at saturation, on a plateau
    of 38 req/s with minutes of 42: below saturation the queue does not grow, so the fleet holds
    at four; the defaults' guessed band (sustained at 90 %, minutes at 100 %) orders a fifth for
    the same load. Once the queue grows at 42, the measured band orders it too."""
    common: dict[str, Any] = {"tune_batching": False, "interval_s": 30.0}
    measured = make_params(target_utilization=1.0, max_utilization=1.075, **common)
    guessed = make_params(**common)

    def plateau(params: PolicyParams, pending: Callable[[int], float]) -> SteppedFleet:
        fleet = SteppedFleet(params, desired=4)
        for i in range(24):
            fleet.step(rate=42.0 if i % 4 == 3 else 38.0, ttft=0.4, pending=pending(i))
        return fleet

    assert plateau(measured, lambda _: 0.0).desired == 4
    assert plateau(guessed, lambda _: 0.0).desired >= 5
    growing = plateau(measured, lambda i: 0.0 if i < 20 else 40.0 * (i - 19))
    assert growing.desired >= 5
    assert all(d.action != "scale-up" for _, d in growing.decisions[:20])
    confirmed = [d for _, d in growing.decisions[20:] if d.action == "scale-up"]
    assert confirmed and all("confirmed by queue/TTFT" in d.reason for d in confirmed)


def test_deep_slack_probes_capacity_up_and_says_so() -> None:
    """No prior: 4 replicas serve 30 req/s at 0.1x the target with nothing queued. The load served
    proves 7.5 per replica (8.33 planned at 90 %), which sizes exactly this fleet; the old policy
    stopped there for good. Deep slack now raises the estimate to what releases one replica."""
    state = with_state(serving=4, pending=0.0)
    no_prior: dict[str, Any] = {"initial_capacity_rps": None, "tune_batching": False}
    decision, new_state = _decide({"rate": 30.0, "ttft": 0.3}, state=state, **no_prior)
    release = 30.0 / (3 * 0.9)  # 4 - max(1, 4 // 3) = 3 replicas left
    assert new_state.capacity == pytest.approx(release)
    assert f"probed up to {release:.2f}: 7.50 per replica with TTFT p95 at 0.10x target" in decision.reason
    assert decision.metrics["capacity_before"] is None
    assert decision.metrics["capacity_per_replica"] == pytest.approx(release)
    # Not while TTFT is merely within the scale-down band, nor with a queue, nor when the estimate
    # already releases replicas (nothing then depends on it).
    for obs, capacity in (({"ttft": 1.2}, None), ({"pending": 20.0}, None), ({"rate": 10.0}, 20.0)):
        _, kept = _decide(
            {"rate": 30.0, "ttft": 0.3, **obs}, state=replace(state, capacity=capacity), **no_prior
        )
        assert kept.capacity == pytest.approx(capacity or 7.5 / 0.9), obs
    # A load at which the queue was seen growing caps later probes below it.
    _, capped = _decide({"rate": 30.0, "ttft": 0.3}, state=replace(state, refuted=9.0), **no_prior)
    assert capped.capacity == pytest.approx(0.95 * 9.0)
    _, refuting = _decide(
        {"rate": 36.0, "ttft": 2.5, "pending": 80.0}, state=replace(state, capacity=11.0), **no_prior
    )
    assert (
        refuting.refuted == pytest.approx(9.0) and refuting.capacity is not None and refuting.capacity < 11.0
    )
    # A load-tested prior is not probed past: the load test found where TTFT breaks.
    _, calibrated = _decide({"rate": 30.0, "ttft": 0.3}, state=state)
    assert calibrated.capacity == pytest.approx(10.0)


def test_an_oversized_fleet_without_a_prior_learns_its_capacity_and_shrinks() -> None:
    """The fleet the old policy never left: 8 replicas, 30 req/s, TTFT 0.3 s. A replica really
    serves 10 req/s; the fleet's TTFT stays low until one carries more than that, and the queue
    grows beyond it. Probing converges the estimate to within 25 % of 10 and sheds replicas."""
    params = make_params(initial_capacity_rps=None, interval_s=30.0, scale_down_stabilization_s=300.0)
    fleet = SteppedFleet(params, desired=8)
    pending = 0.0
    for _ in range(120):  # one hour
        per_replica = 30.0 / fleet.ready
        over = per_replica > 10.0
        pending = pending + 200.0 if over else 0.0
        fleet.step(rate=30.0, ttft=4.0 if over else 0.3 + 0.1 * per_replica, pending=pending)
    assert fleet.state.capacity is not None and 7.5 <= fleet.state.capacity <= 12.5, fleet.state.capacity
    assert fleet.desired in (4, 5), [d.summary for _, d in fleet.decisions if d.replicas is not None]
    old = SteppedFleet(replace(params, capacity_probing=False), desired=8)
    for _ in range(120):
        old.step(rate=30.0, ttft=0.3 + 0.1 * 30.0 / old.ready, pending=0.0)
    assert old.desired == 8  # what learning from the load served alone does


# --------------------------------------------------------------------------------------------
# batching


@pytest.mark.parametrize(
    ("case", "obs", "params", "batching", "expected", "says"),
    [
        (
            "slack and busy GPUs: longer queue delay",
            {},
            {},
            BATCHING,
            replace(BATCHING, max_queue_delay_us=4000),
            "queue delay 2000 -> 4000 us",
        ),
        (
            "never past the delay bound",
            {},
            {"max_queue_delay_us": 3000},
            BATCHING,
            replace(BATCHING, max_queue_delay_us=3000),
            "for larger batches",
        ),
        (
            "delay at its bound and batches fill the largest preferred size: allow a larger one",
            {"batch": 7.5},
            {},
            replace(BATCHING, max_queue_delay_us=20_000),
            replace(BATCHING, max_queue_delay_us=20_000, preferred_batch_sizes=(4, 8, 16)),
            "allow 16",
        ),
        (
            "never past the preferred-size bound",
            {"batch": 7.5},
            {"max_preferred_batch_size": 8},
            replace(BATCHING, max_queue_delay_us=20_000),
            None,
            "",
        ),
        (
            "queueing dominates TTFT: halve the delay",
            {"ttft": 2.0, "queue": 0.5},
            {},
            BATCHING,
            replace(BATCHING, max_queue_delay_us=1000),
            "halve the queue delay",
        ),
        (
            "queueing dominates at the minimum delay: one more instance",
            {"ttft": 2.0, "queue": 0.5},
            {},
            replace(BATCHING, max_queue_delay_us=0),
            replace(BATCHING, max_queue_delay_us=0, instance_count=2),
            "one more model instance",
        ),
        (
            "instances at their bound: nothing left to narrow",
            {"ttft": 2.0, "queue": 0.5},
            {},
            replace(BATCHING, max_queue_delay_us=0, instance_count=2),
            None,
            "",
        ),
        (
            "in-flight batching backend: Triton's delay back to the minimum, never widened",
            {},
            {"inflight_batching": True},
            BATCHING,
            replace(BATCHING, max_queue_delay_us=0),
            "batches in flight",
        ),
        (
            "in-flight backend at the minimum delay: nothing to do",
            {},
            {"inflight_batching": True},
            replace(BATCHING, max_queue_delay_us=0),
            None,
            "",
        ),
        ("tuning off", {}, {"tune_batching": False}, BATCHING, None, ""),
    ],
)
def test_batching_steps(
    case: str,
    obs: dict[str, Any],
    params: dict[str, Any],
    batching: BatchingConfig,
    expected: BatchingConfig | None,
    says: str,
) -> None:
    decision, _ = _decide(obs, make_fleet(batching=batching), **params)
    assert decision.batching == expected, (case, decision)
    assert decision.replicas is None
    assert says in decision.reason, (case, decision.reason)


def test_a_batching_step_that_worsened_ttft_is_reverted_and_not_retried() -> None:
    widened = replace(BATCHING, max_queue_delay_us=4000)
    trial = BatchingTrial(applied_at=0.0, previous=BATCHING, ttft_before_s=0.5, direction="widen")
    state = with_state(trial=trial, last_batching_at=0.0)
    decision, new_state = _decide({"ttft": 2.0}, make_fleet(batching=widened), state, now=30.0)
    assert decision.action == "revert-batching"
    assert decision.batching == BATCHING
    assert "raised TTFT p95 from 0.50s to 2.00s" in decision.reason
    assert new_state.blocked is not None and new_state.blocked[0] == "widen"
    # Later, with slack again, the widening stays blocked for a while.
    decision, _ = _decide({"ttft": 0.3}, make_fleet(), replace(new_state, last_batching_at=0.0), now=90.0)
    assert decision.batching is None


def test_a_step_that_did_not_hurt_is_kept() -> None:
    trial = BatchingTrial(applied_at=0.0, previous=BATCHING, ttft_before_s=0.5, direction="widen")
    state = with_state(trial=trial, last_batching_at=0.0)
    decision, new_state = _decide(
        {"ttft": 0.52}, make_fleet(batching=replace(BATCHING, max_queue_delay_us=4000)), state, now=30.0
    )
    assert decision.action != "revert-batching" and new_state.blocked is None


@pytest.mark.parametrize(
    ("fleet", "state"),
    [
        (make_fleet(5, ready=4), None),  # a scale-up in flight
        (make_fleet(), with_state(last_scale_at=0.0)),  # the interval after a scaling action
        (make_fleet(), with_state(last_batching_at=0.0)),  # right after another batching step
    ],
)
def test_no_batching_change_while_the_fleet_moves(fleet: FleetState, state: PolicyState | None) -> None:
    decision, _ = _decide({}, fleet, state)
    assert decision.batching is None


def test_within_bounds_clamps_every_field() -> None:
    params = make_params(max_preferred_batch_size=8, max_queue_delay_us=5000, max_instance_count=2)
    clamped = within_bounds(BatchingConfig((4, 8, 16, 64), 90_000, 7), params)
    assert clamped == BatchingConfig((4, 8), 5000, 2)


def test_at_the_replica_cap_a_breach_may_still_narrow_batching_but_never_widen() -> None:
    # 4 replicas is the cap: queueing dominates a breach, so the delay is halved...
    decision, _ = _decide({"ttft": 4.0, "queue": 2.0, "pending": None}, make_fleet(4), max_replicas=4)
    assert decision.replicas is None
    assert decision.batching == replace(BATCHING, max_queue_delay_us=1000)
    # ...while an urgent breach with overall slack never widens it.
    urgent = {"ttft": 0.3, "pending": None, "by_class": {"urgent": 2.0, "standard": 0.3, "bulk": 0.3}}
    decision, _ = _decide(urgent, make_fleet(4), max_replicas=4)
    assert decision.replicas is None and decision.batching is None


def test_the_backlog_counts_until_the_first_ordered_replicas_serve() -> None:
    # 50 req/s on 4 x 10 req/s with TTFT confirming: 10 req/s pile up until the replicas ordered
    # 60 s ago serve (60 s more), drained within the 60 s after: +10 req/s of backlog.
    state = with_state(warming_since=0.0, capacity=10.0)
    decision, _ = _decide(
        {"rate": 50.0, "ttft": 2.0, "pending": 0.0}, make_fleet(7, ready=4), state, now=60.0
    )
    assert decision.metrics["backlog_load"] == pytest.approx(10.0 * 60.0 / 60.0)
    assert decision.replicas is None  # the 7 ordered cover 60 req/s at 90 %


@pytest.mark.parametrize("warmup_s", [120.0, 360.0])
def test_a_backlog_drains_within_a_minute_however_slow_the_pods(warmup_s: float) -> None:
    # 50 req/s on 4 x 10 with TTFT confirming and 100 queued: the 10 req/s excess piles up for a
    # whole warm-up before a replica ordered now serves, and all of it is planned to drain in
    # the 60 s after. Slower pods leave a bigger backlog, so they order more, never less.
    state = with_state(capacity=10.0)
    decision, _ = _decide({"rate": 50.0, "ttft": 4.0, "pending": 100.0}, state=state, warmup_s=warmup_s)
    assert decision.metrics["backlog_load"] == pytest.approx((100.0 + 10.0 * warmup_s) / 60.0)


def test_a_standing_queue_with_ttft_slack_is_no_backlog() -> None:
    state = with_state(capacity=10.0, pending=8.0)
    decision, _ = _decide({"rate": 30.0, "ttft": 0.3, "pending": 8.0}, state=state)
    assert decision.metrics["backlog_load"] == 0.0


@pytest.mark.parametrize(("ready", "expected"), [(2, None), (5, 6)])  # a quarter per interval
def test_warming_replicas_are_cancelled_only_when_the_ready_ones_cover_the_load(
    ready: int, expected: int | None
) -> None:
    state = with_state(recommendations=((0.0, 1),), capacity=10.0)
    obs = {"rate": 30.0, "ttft": 0.3}  # needs 4 at 90 %
    decision, _ = _decide(obs, make_fleet(8, ready=ready), state, now=300.0, scale_down_stabilization_s=0.0)
    assert decision.replicas == expected, decision
    if expected is None:
        assert "not cancelling them" in decision.reason
