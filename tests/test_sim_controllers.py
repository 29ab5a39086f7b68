"""Peer baselines against their documented algorithms, and the oracle's provisioning schedule."""

from __future__ import annotations

import pytest

from phoenix_operator.control.observation import Observation
from phoenix_operator.sim import BatcherConfig, FleetView
from phoenix_operator.sim.controllers import (
    REGISTRY,
    HPABehavior,
    HPAController,
    KEDAController,
    LLMDController,
    hpa_external_average_replicas,
    hpa_utilization_replicas,
    llmd_saturation,
    register_controller,
)
from phoenix_operator.sim.oracle import OracleSchedule


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
    util: float | None = None,
    pending: float | None = None,
    saturation: tuple[float, ...] = (),
    waiting: tuple[int, ...] = (),
    now: float = 15.0,
) -> FleetView:
    obs = Observation(at=now, window_s=15.0, ttft_p95_s=0.5, gpu_utilization=util, pending_requests=pending)
    return FleetView(
        now=now,
        observation=obs,
        desired_replicas=desired,
        ready_replicas=ready,
        starting_replicas=starting,
        draining_replicas=0,
        batching=BatcherConfig(),
        replica_waiting=waiting or (0,) * ready,
        replica_saturation=saturation or (0.0,) * ready,
        replica_running=(0,) * ready,
        min_replicas=1,
        max_replicas=20,
        startup_s=120.0,
        slo_ttft_s=3.0,
    )


def test_hpa_controller_reads_gpu_utilisation() -> None:
    hpa = HPAController(target_utilization=0.5)
    assert hpa.interval_s == 15.0
    cmd = hpa.decide(15.0, _view(desired=4, ready=4, util=1.0))
    assert cmd.target_replicas == 8
    assert hpa.decide(30.0, _view(desired=8, ready=4, starting=4, util=1.0, now=30.0)).target_replicas == 8
    assert HPAController().decide(15.0, _view(desired=3, ready=3, util=None)).target_replicas is None


def test_keda_polls_every_30s_with_threshold_5() -> None:
    keda = KEDAController()
    assert (
        keda.decide(15.0, _view(desired=2, ready=2, pending=40.0)).target_replicas == 6
    )  # max(2+4, 2*2) cap
    # 15 s later the metric is not re-polled: the cached 40 is used even though the queue emptied.
    cmd = keda.decide(30.0, _view(desired=6, ready=2, starting=4, pending=0.0, now=30.0))
    assert cmd.target_replicas == 8  # ceil(40 / 5)
    cmd = keda.decide(45.0, _view(desired=8, ready=2, starting=6, pending=0.0, now=45.0))
    assert cmd.target_replicas == 8  # polled 0 now, but scale-down is stabilised for 300 s


def test_llmd_saturation_band() -> None:
    assert llmd_saturation(0.4, 0) == pytest.approx(0.5)
    assert llmd_saturation(0.1, 10) == pytest.approx(2.0)
    llmd = LLMDController()
    up = llmd.decide(30.0, _view(desired=4, ready=4, saturation=(0.6,) * 4))  # 0.75 each
    assert up.target_replicas == 6  # ceil(3.0 / 0.55)
    hold = llmd.decide(30.0, _view(desired=4, ready=4, saturation=(0.4,) * 4))  # 0.5: inside the band
    assert hold.target_replicas == 4
    down = llmd.decide(30.0, _view(desired=4, ready=4, saturation=(0.2,) * 4))  # 0.25 < 0.40
    assert down.target_replicas == 3
    warming = llmd.decide(30.0, _view(desired=6, ready=4, starting=2, saturation=(0.6,) * 4))
    assert warming.target_replicas == 6  # 3.0 / 6 = 0.5: pods warming up count, no double scale-up


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


def test_registry_holds_the_peers_and_accepts_phoenix() -> None:
    assert {"oracle", "hpa", "keda", "llmd", "static-avg", "static-peak"} <= set(REGISTRY)
    saved = dict(REGISTRY)
    try:
        register_controller("phoenix", lambda ctx: HPAController(name="phoenix"))
        assert "phoenix" in REGISTRY
    finally:
        REGISTRY.clear()
        REGISTRY.update(saved)
