"""Peer baselines against their documented algorithms, and the oracle's provisioning schedule."""

from __future__ import annotations

import pytest

from phoenix_operator.observation import Observation
from phoenix_operator.sim import BatcherConfig, FleetView
from phoenix_operator.sim.controllers import (
    DEFAULT_POLICIES,
    REGISTRY,
    TUNING,
    DynamoPlannerController,
    HPABehavior,
    HPAController,
    KEDAController,
    LLMDSLOController,
    behavior_with,
    hpa_external_average_replicas,
    hpa_utilization_replicas,
    llmd_slo_signal,
    register_controller,
)
from phoenix_operator.sim.cost import LLMEngineCost
from phoenix_operator.sim.oracle import OracleSchedule
from phoenix_operator.sim.profile import load_profile


@pytest.mark.parametrize(
    ("current", "values", "missing", "target", "expected"),
    [
        (4, [0.8] * 4, 0, 0.8, 4),  # at target
        (4, [0.85] * 4, 0, 0.8, 4),  # within 10 % tolerance
        (4, [1.0] * 4, 0, 0.8, 5),  # ceil(4 * 1.25)
        (4, [0.4] * 4, 0, 0.8, 2),  # ceil(4 * 0.5)
        (10, [0.1] * 10, 0, 0.8, 2),  # ceil(10 * 0.125)
        (5, [1.0] * 4, 1, 0.8, 5),  # scale-up: missing pod counts 0 -> ratio 1.0 -> hold
        (6, [1.0] * 4, 2, 0.8, 6),  # ratio (4/6)/0.8 = 0.83 < 1 flips direction -> hold
        (5, [0.2] * 4, 1, 0.8, 2),  # scale-down: missing pod at target -> ratio 0.4 -> ceil(5*0.4)
        (3, [], 0, 0.8, 3),  # no metrics: keep
    ],
)
def test_hpa_utilization_replicas(
    current: int, values: list[float], missing: int, target: float, expected: int
) -> None:
    assert hpa_utilization_replicas(current, values, missing, target) == expected


@pytest.mark.parametrize(
    ("status", "usage", "target", "expected"),
    [
        (2, 10.0, 5.0, 2),  # exactly at target
        (2, 10.9, 5.0, 2),  # within tolerance
        (2, 40.0, 5.0, 8),  # ceil(40 / 5)
        (4, 0.0, 5.0, 0),  # nothing waiting: ceil(0) (clamped to minReplicas later)
        (3, 16.0, 5.0, 3),  # 16 / 15 = 1.07: within tolerance
        (3, 17.0, 5.0, 4),  # ceil(17 / 5)
    ],
)
def test_hpa_external_average_value(status: int, usage: float, target: float, expected: int) -> None:
    assert hpa_external_average_replicas(status, usage, target) == expected


def test_hpa_scale_up_is_limited_to_max_of_double_or_four_pods_per_15s() -> None:
    b = HPABehavior()
    assert b.normalize(0.0, 2, 50, 1, 100) == 6  # max(2 + 4, 2 * 2)
    assert b.normalize(5.0, 6, 50, 1, 100) == 6  # 4 pods already added in this 15 s period
    assert b.normalize(16.0, 6, 50, 1, 100) == 12  # new period: max(6 + 4, 6 * 2)
    assert HPABehavior().normalize(0.0, 10, 50, 1, 100) == 20
    assert HPABehavior().normalize(0.0, 10, 50, 1, 15) == 15  # maxReplicas


def test_hpa_scale_down_waits_for_the_stabilization_window() -> None:
    b = HPABehavior()
    assert b.normalize(0.0, 8, 8, 1, 100) == 8
    # Load drops: recommendations of 2, but the highest in the last 300 s is 8.
    for t in range(15, 300, 15):
        assert b.normalize(float(t), 8, 2, 1, 100) == 8
    assert b.normalize(301.0, 8, 2, 1, 100) == 2  # window passed: 100 %/15 s allows the full step
    assert b.normalize(316.0, 2, 0, 1, 100) == 2  # the 2s recommended in the last 300 s still hold
    assert b.normalize(700.0, 2, 0, 1, 100) == 1  # then minReplicas


def test_fresh_hpa_does_not_scale_down_immediately() -> None:
    b = HPABehavior()
    assert b.normalize(0.0, 6, 2, 1, 100) == 6


def _view(
    *,
    desired: int,
    ready: int,
    starting: int = 0,
    pending: float | None = None,
    waiting: tuple[int, ...] = (),
    running: tuple[int, ...] = (),
    ttft_p90: float | None = None,
    tpot_p90: float | None = None,
    rate: float | None = None,
    prompt: float | None = None,
    output: float | None = None,
    now: float = 15.0,
) -> FleetView:
    obs = Observation(
        at=now,
        window_s=15.0,
        ttft_p95_s=0.5,
        pending_requests=pending,
        request_rate=rate,
        mean_prompt_tokens=prompt,
        mean_output_tokens=output,
    )
    return FleetView(
        now=now,
        observation=obs,
        desired_replicas=desired,
        ready_replicas=ready,
        starting_replicas=starting,
        draining_replicas=0,
        batching=BatcherConfig(),
        replica_waiting=waiting or (0,) * ready,
        replica_saturation=(0.0,) * ready,
        replica_running=running or (0,) * ready,
        min_replicas=1,
        max_replicas=20,
        startup_s=120.0,
        slo_ttft_s=3.0,
        ttft_p90_s=ttft_p90,
        tpot_p90_s=tpot_p90,
    )


def test_hpa_scales_on_in_flight_requests_per_pod() -> None:
    hpa = HPAController(target_in_flight=32.0)
    assert hpa.interval_s == 15.0
    # 48 running + 16 waiting per pod = 2x the target: twice the pods.
    cmd = hpa.decide(15.0, _view(desired=4, ready=4, running=(48,) * 4, waiting=(16,) * 4))
    assert cmd.target_replicas == 8
    # Pods still starting count as empty on a scale-up: (4 * 64 + 0) / 8 = 32 = target -> hold.
    view = _view(desired=8, ready=4, starting=4, running=(48,) * 4, waiting=(16,) * 4, now=30.0)
    assert hpa.decide(30.0, view).target_replicas == 8
    # Within 10 % of the target: no change.
    assert HPAController().decide(15.0, _view(desired=3, ready=3, running=(34,) * 3)).target_replicas == 3
    assert HPAController().decide(15.0, _view(desired=3, ready=0)).target_replicas is None


def test_keda_reads_waiting_requests_at_every_hpa_sync() -> None:
    keda = KEDAController(behavior=behavior_with(120.0))
    assert keda.interval_s == 15.0
    assert keda.decide(15.0, _view(desired=2, ready=2, pending=40.0)).target_replicas == 6  # max(2+4, 2*2)
    # The next sync reads the metric again (no 30 s cache): 0 waiting now, but the scale-down
    # window (120 s here, set through horizontalPodAutoscalerConfig) holds the fleet.
    cmd = keda.decide(30.0, _view(desired=6, ready=2, starting=4, pending=0.0, now=30.0))
    assert cmd.target_replicas == 6 and "waiting 0" in cmd.reason
    # The 15 s recommendation (ceil(40 / 5) = 8) holds the fleet until it leaves the window.
    assert keda.decide(120.0, _view(desired=6, ready=6, pending=0.0, now=120.0)).target_replicas == 6
    assert keda.decide(136.0, _view(desired=6, ready=6, pending=0.0, now=136.0)).target_replicas == 1


def test_llmd_slo_signal_is_the_worse_latency_ratio_capped_at_two() -> None:
    assert llmd_slo_signal(1.5, 0.02, 3.0) == pytest.approx(0.5)
    assert llmd_slo_signal(0.3, 0.08, 3.0) == pytest.approx(0.8)  # TPOT 80 ms of 100 ms
    assert llmd_slo_signal(30.0, 0.01, 3.0) == 2.0
    assert llmd_slo_signal(None, None, 3.0) is None


def test_llmd_slo_band_smoothing_and_warming_discount() -> None:
    llmd = LLMDSLOController(ttft_target_s=3.0, behavior=behavior_with(0.0))
    up = llmd.decide(15.0, _view(desired=4, ready=4, ttft_p90=3.0, tpot_p90=0.01))  # s = 1.0
    assert up.target_replicas == 8  # ceil(4 * 1.0 / 0.55)
    # Smoothed over 45 s: (1.0 + 0.1) / 2 = 0.55 is not above 0.55 -> hold.
    hold = llmd.decide(30.0, _view(desired=8, ready=8, ttft_p90=0.3, tpot_p90=0.01, now=30.0))
    assert hold.target_replicas == 8
    # 60 s later the 1.0 has left the window: 0.1 < 0.40 -> one pod down.
    llmd.decide(45.0, _view(desired=8, ready=8, ttft_p90=0.3, tpot_p90=0.01, now=45.0))
    down = llmd.decide(75.0, _view(desired=8, ready=8, ttft_p90=0.3, tpot_p90=0.01, now=75.0))
    assert down.target_replicas == 7
    # A high signal while half the fleet is still warming is discounted by ready / (ready +
    # starting) for scale-up (0.8 -> 0.4: no second scale-up) but is not low enough to scale down.
    fresh = LLMDSLOController(ttft_target_s=3.0, behavior=behavior_with(0.0))
    view = _view(desired=8, ready=4, starting=4, ttft_p90=2.4, tpot_p90=0.01)
    assert fresh.decide(15.0, view).target_replicas == 8
    view = _view(desired=8, ready=4, starting=4, ttft_p90=4.8, tpot_p90=0.01)  # 1.6 -> 0.8
    assert LLMDSLOController(ttft_target_s=3.0).decide(15.0, view).target_replicas == 12


def test_dynamo_planner_sizes_predicted_load_by_profiled_throughput() -> None:
    cost = LLMEngineCost(load_profile())
    per_request = cost.service_time(1000, 150, 1000.0**2)
    rate = 10.0 / per_request  # ten replicas' worth of work
    planner = DynamoPlannerController(cost, predictor="constant", utilization=1.0)
    assert planner.interval_s == 180.0
    cmd = planner.decide(180.0, _view(desired=2, ready=2, rate=rate, prompt=1000.0, output=150.0))
    assert cmd.target_replicas == 10
    headroom = DynamoPlannerController(cost, predictor="constant", utilization=0.8)
    view = _view(desired=2, ready=2, rate=rate, prompt=1000.0, output=150.0)
    assert headroom.decide(180.0, view).target_replicas == 13  # ceil(10 / 0.8)
    # The linear predictor extrapolates the rate's trend one interval ahead.
    linear = DynamoPlannerController(cost, predictor="linear", utilization=1.0)
    linear.decide(180.0, _view(desired=2, ready=2, rate=rate / 2, prompt=1000.0, output=150.0))
    ahead = linear.decide(360.0, _view(desired=2, ready=2, rate=rate, prompt=1000.0, output=150.0))
    assert ahead.target_replicas == 15  # 10 + (10 - 5) replicas of work
    assert planner.decide(540.0, _view(desired=2, ready=2, rate=0.0)).target_replicas is None


def test_oracle_orders_pods_ahead_of_start_up() -> None:
    sched = OracleSchedule(window_s=30.0, needs=(2, 2, 2, 2, 2, 2, 5, 5, 2, 2, 2, 2, 2, 2), startup_s=120.0)
    # Window 6 (180-240 s) needs 5 READY pods: with 120 s start-up they must be ordered at 60 s
    # (the tick at 45 s would be 15 s early, paying for idle GPUs).
    assert sched.command_at(30.0) == 2
    assert sched.command_at(45.0) == 2
    assert sched.command_at(60.0) == 5
    assert sched.command_at(225.0) == 5
    assert sched.command_at(240.0) == 2  # window 8 needs 2 again: scale down at its start
    assert sched.command_at(10_000.0) == 2


def test_registry_holds_the_benchmarks_policies() -> None:
    assert DEFAULT_POLICIES == (
        "phoenix",
        "phoenix-tuned",
        "phoenix-uncalibrated",
        "oracle",
        "hpa",
        "keda",
        "llmd-slo",
        "dynamo-planner",
        "static-best",
        "static-avg",
    )
    assert set(DEFAULT_POLICIES) <= set(REGISTRY)
    # The same tuning budget for every tuned policy: at most two knobs, at most four runs.
    for knobs in TUNING.values():
        runs = 1
        for values in knobs.values():
            runs *= len(values)
        assert len(knobs) <= 2 and runs <= 4
    saved = dict(REGISTRY)
    try:
        register_controller("custom", lambda ctx: HPAController(name="custom"))
        assert "custom" in REGISTRY
    finally:
        REGISTRY.clear()
        REGISTRY.update(saved)
