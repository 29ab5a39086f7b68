"""The benchmark's measuring: fleet sizes from the measured window, the autoscalers' start,
figures over a window, and the oracle's search."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from phoenix_operator.sim import load_profile
from phoenix_operator.sim.bench import make_context, measure, run_policy
from phoenix_operator.sim.controllers import replica_load, service_times
from phoenix_operator.sim.fleet import FleetResult
from phoenix_operator.sim.metrics import window_attainment
from phoenix_operator.sim.oracle import _needs_at, plan_oracle
from phoenix_operator.sim.request import Arrival, RequestRecord
from phoenix_operator.sim.workloads import AZURE_CONV_TOKENS, Workload, assign_classes


def _workload(rates: list[tuple[float, float]], seed: int = 0, **meta: Any) -> Workload:
    """Poisson traffic with the Azure token mix: ``(until_s, req/s)`` segments."""
    rng = np.random.default_rng(seed)
    times: list[float] = []
    t = 0.0
    for until, rate in rates:
        while True:
            t += rng.exponential(1.0 / rate)
            if t >= until:
                t = until
                break
            times.append(t)
    prompts, outputs = AZURE_CONV_TOKENS.sample(len(times), rng)
    labels = assign_classes(len(times), seed)
    arrivals = tuple(
        Arrival(ti, priority=prio, prompt_tokens=int(p), output_tokens=int(o), klass=k)
        for ti, p, o, (k, prio) in zip(times, prompts, outputs, labels, strict=True)
    )
    return Workload(name="steps", arrivals=arrivals, duration_s=rates[-1][0], source="synthetic", **meta)


def test_replica_load_over_a_span() -> None:
    wl = _workload([(300.0, 5.0), (600.0, 25.0)])
    ctx = make_context(wl, load_profile())
    low, _ = replica_load(wl, ctx.cost, 8, span=(0.0, 300.0))
    high, peak = replica_load(wl, ctx.cost, 8, span=(300.0, 600.0))
    whole, _ = replica_load(wl, ctx.cost, 8)
    assert high == pytest.approx(5 * low, rel=0.2)
    assert whole == pytest.approx((low + high) / 2, rel=1e-6)
    assert peak >= high
    assert replica_load(wl, ctx.cost, 8, span=(700.0, 800.0)) == (0.0, 0.0)


def test_fleets_are_sized_for_the_measured_window_and_autoscalers_for_the_start() -> None:
    profile = load_profile()
    segments = [(300.0, 5.0), (600.0, 25.0)]
    cold = make_context(_workload(segments), profile)
    peak = make_context(
        _workload(segments, measured_window_s=(300.0, 600.0), start_window_s=(0.0, 60.0)), profile
    )
    # Measured over the peak only, the fleets are larger than sized for the whole run...
    assert peak.static_avg > cold.static_avg and peak.static_peak >= cold.static_peak
    # ...and the autoscalers start with what the first minute needs, not with static-avg.
    assert cold.settings.initial_replicas == cold.static_avg
    assert peak.settings.initial_replicas == 1 < peak.static_avg
    # Phoenix starts where the others do.
    run = run_policy(peak, "static-avg", 3.0)
    assert run.figures["mean_replicas"] == pytest.approx(peak.static_avg)


def _record(i: int, arrival: float, ttft: float | None) -> RequestRecord:
    rec = RequestRecord(i, Arrival(arrival, klass="standard"), "standard")
    if ttft is not None:
        rec.first_token_s = arrival + ttft
        rec.status = "ok"
    return rec


def test_measure_counts_arrivals_and_gpu_time_inside_the_window() -> None:
    records = [_record(0, 10.0, 0.5), _record(1, 110.0, 5.0), _record(2, 150.0, 1.0), _record(3, 190.0, None)]
    result = FleetResult(
        records=records,
        timeline=[(0.0, 2, 2, 2)],
        replica_spans=[(0.0, 0.0, None), (0.0, 0.0, 150.0), (120.0, 240.0, None)],
        scaling_actions=2,
        batching_changes=0,
        horizon_s=200.0,
        end_s=200.0,
    )
    window = measure(result, 3.0, 3.0, (100.0, 200.0))
    assert window["requests"] == 3 and window["slo_attainment"] == pytest.approx(1 / 3)
    assert window["unserved"] == 1
    # GPU time in [100, 200): pod 0 100 s, pod 1 50 s, pod 2 (starting pods cost too) 80 s.
    assert window["gpu_hours"] == pytest.approx(230.0 / 3600)
    assert window["mean_replicas"] == pytest.approx(2.3)
    assert window["cost_usd"] == pytest.approx(3 * 230.0 / 3600)
    whole = measure(result, 3.0, 3.0, (0.0, 200.0))
    assert whole["requests"] == 4 and whole["window_s"] == [0.0, 200.0]


def test_needs_follow_the_planned_utilisation() -> None:
    work = np.array([0.0, 30.0, 60.0, 95.0])  # GPU seconds per 30 s window
    assert _needs_at(work, 30.0, 1.0) == [1, 1, 2, 4]
    assert _needs_at(work, 30.0, 0.8) == [1, 2, 3, 4]


def test_the_oracle_returns_a_simulated_feasible_and_cheaper_schedule() -> None:
    profile = replace(load_profile(), startup_s=60.0)
    wl = _workload([(240.0, 10.0), (480.0, 30.0), (720.0, 10.0)], seed=2)
    ctx = make_context(wl, profile, quick=True, startup_s=60.0)
    oracle = plan_oracle(ctx, iterations=8)
    assert oracle.feasible and 1 <= oracle.iterations_run <= 8
    feasible = [gpu for _, gpu, ok in oracle.history if ok]
    assert feasible and min(feasible) <= feasible[0]  # the search kept the cheapest it found
    run = run_policy(ctx, "oracle", 3.0)
    n = int(np.ceil(wl.duration_s / 30.0))
    att = window_attainment(run.result.records, ctx.slo_ttft_s, 30.0, n)
    assert np.nanmin(att) >= 0.99
    # It follows the load: more replicas in the busy middle than at the quiet start.
    needs = oracle.schedule.needs
    assert max(needs[9:15]) > max(needs[:4])
    work = service_times(wl, ctx.cost, 8)
    assert run.figures["gpu_hours"] * 3600 >= work.sum()  # never below the work itself
