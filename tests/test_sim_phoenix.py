"""Phoenix in the simulator: the adapter runs the operator's own policy in closed loop."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from phoenix_operator.control import policy
from phoenix_operator.render.tritonconfig import BatchingConfig
from phoenix_operator.sim import Arrival, BatcherConfig, BlockingBatchCost, load_profile, run_fleet
from phoenix_operator.sim.bench import BENCH_WARMUP, make_context, run_bench, run_controller
from phoenix_operator.sim.controllers import REGISTRY, BenchContext
from phoenix_operator.sim.metrics import attainment
from phoenix_operator.sim.options import WorkloadOptions, build_workload
from phoenix_operator.sim.phoenix import (
    PhoenixController,
    calibrated_capacity,
    from_batching,
    params_for,
    phoenix_controller,
    simulated_spec,
    to_batching,
)
from phoenix_operator.sim.request import DEFAULT_CLASSES
from phoenix_operator.sim.workloads import AZURE_CONV_TOKENS, Workload, assign_classes


def _step_workload(low: float, high: float, switch_s: float, end_s: float, seed: int = 0) -> Workload:
    """Poisson traffic with the Azure conversation token mix: `low` req/s, then `high`."""
    rng = np.random.default_rng(seed)
    times: list[float] = []
    t = 0.0
    while t < end_s:
        t += rng.exponential(1.0 / (low if t < switch_s else high))
        times.append(t)
    prompts, outputs = AZURE_CONV_TOKENS.sample(len(times), rng)
    labels = assign_classes(len(times), seed)
    arrivals = tuple(
        Arrival(ti, priority=prio, prompt_tokens=int(p), output_tokens=int(o), klass=klass)
        for ti, p, o, (klass, prio) in zip(times, prompts, outputs, labels, strict=True)
    )
    return Workload(name="step", arrivals=arrivals, duration_s=end_s, source="synthetic")


def _run(ctx: BenchContext, controller: Any, batching: BatcherConfig | None = None) -> Any:
    return run_fleet(
        ctx.workload.arrivals,
        ctx.cost,
        batching or ctx.profile.batching,
        ctx.settings,
        controller,
        ctx.slo_ttft_s,
        dict(ctx.profile.classes),
        horizon_s=ctx.workload.duration_s,
    )


def test_batching_translates_both_ways() -> None:
    sim = BatcherConfig(
        max_batch_size=16,
        preferred_batch_sizes=(8, 4),
        max_queue_delay_us=3000,
        instance_count=2,
        priority_levels=3,
        default_priority_level=2,
    )
    assert to_batching(sim) == BatchingConfig((4, 8), 3000, 2)
    back = from_batching(BatchingConfig((2, 16), 500, 1), sim)
    assert (back.preferred_batch_sizes, back.max_queue_delay_us, back.instance_count) == ((2, 16), 500, 1)
    # Everything the policy does not own is the simulator's, unchanged.
    assert (back.max_batch_size, back.priority_levels, back.default_priority_level) == (16, 3, 2)
    assert from_batching(to_batching(sim), sim).effective_preferred == sim.effective_preferred


def test_simulated_spec_describes_the_benchmarked_deployment() -> None:
    profile = load_profile()
    ctx = make_context(_step_workload(10.0, 10.0, 0.0, 60.0), profile)
    spec = simulated_spec(ctx)
    auto = spec.autoscaling
    assert auto.mode == "auto"
    assert (auto.min_replicas, auto.max_replicas, auto.gpu_budget) == (
        1,
        ctx.settings.max_replicas,
        ctx.settings.max_replicas,
    )
    assert auto.ttft_p95_target_seconds == ctx.slo_ttft_s == 3.0
    # The loop's own settings are the operator's defaults, as a user who sets none gets them.
    assert (auto.interval_seconds, auto.scale_down_stabilization_seconds) == (30, 300)
    assert auto.replica_startup_seconds == 120
    assert spec.triton.replicas == ctx.static_avg
    assert spec.model.backend == "tensorrtllm"
    assert spec.model.max_batch_size == profile.batching.max_batch_size
    assert spec.batching.bounds.max_preferred_batch_size == profile.batching.max_batch_size
    assert spec.priority is not None
    classes = {c.name: (c.level, c.ttft_target_seconds) for c in spec.priority.classes}
    assert classes == {"urgent": (1, 1.5), "standard": (2, 3.0), "bulk": (3, 3.0)}
    assert spec.priority.default_class == "standard"
    controller = phoenix_controller(ctx)
    assert controller.interval_s == 30.0
    params = controller.params
    assert params.warmup_s == profile.startup_s
    assert params.inflight_batching


def test_benchmarked_phoenix_is_the_operators_from_spec_and_nothing_more() -> None:
    """The control loop builds ``PolicyParams.from_spec(spec)``; the benchmark runs exactly that,
    for the spec a user ships after ``phoenix plan --calibrate``: the ``replicaCapacity`` its load
    test measures, no work model fitted to the simulator's cost function."""
    ctx = make_context(_step_workload(20.0, 20.0, 0.0, 300.0, seed=3), load_profile())
    measured = calibrated_capacity(ctx)
    spec = simulated_spec(ctx, replica_capacity=measured)
    params = phoenix_controller(ctx).params
    assert params == policy.PolicyParams.from_spec(spec) == params_for(spec)
    assert not params.has_work_model
    assert params.initial_capacity_rps == measured["requestsPerSecond"] and params.has_capacity_mix
    # The load test's figure is what one replica served, near (not equal to) the full-load rate.
    assert 0.8 * ctx.replica_capacity_rps < measured["requestsPerSecond"] < 1.2 * ctx.replica_capacity_rps
    assert (params.interval_s, params.scale_down_stabilization_s) == (30.0, 300.0)
    tuned = phoenix_controller(ctx, "phoenix-tuned", interval_s=15, scale_down_stabilization_s=120)
    assert (tuned.name, tuned.interval_s, tuned.params.scale_down_stabilization_s) == (
        "phoenix-tuned",
        15.0,
        120.0,
    )
    assert replace(tuned.params, interval_s=30.0, scale_down_stabilization_s=300.0) == params
    # Without the field: online learning alone, no prior.
    bare = REGISTRY["phoenix-uncalibrated"](ctx)
    assert isinstance(bare, PhoenixController) and bare.name == "phoenix-uncalibrated"
    assert bare.params == policy.PolicyParams.from_spec(simulated_spec(ctx))
    assert bare.params.initial_capacity_rps is None


def test_an_oversized_fleet_learns_its_capacity_online_and_sheds_replicas() -> None:
    """8 replicas for 20 req/s, no capacity prior: the old policy learned only the 2.5 req/s per
    replica it served (planned at 90 %) and held all 8. Probing while TTFT has deep slack moves
    the estimate to within 40 % of the load-tested capacity within an hour and the fleet to
    what the load needs, with the SLO kept."""
    profile = load_profile()
    ctx = make_context(_step_workload(20.0, 20.0, 0.0, 3600.0, seed=5), profile)
    ctx = replace(ctx, settings=replace(ctx.settings, initial_replicas=8, max_replicas=8))
    measured = calibrated_capacity(ctx)["requestsPerSecond"]
    controller = REGISTRY["phoenix-uncalibrated"](ctx)
    assert isinstance(controller, PhoenixController)
    result = _run(ctx, controller)
    learned = controller.state.capacity
    assert learned is not None and 0.6 * measured <= learned <= 1.4 * measured, (learned, measured)
    final = controller.decisions[-1][1].metrics["desired_replicas"]
    assert final is not None and final <= 4
    assert any("probed up" in d.reason for _, d in controller.decisions)
    assert attainment(result.records, 3.0) >= 0.99
    assert attainment(result.records, 3.0, "urgent") >= 0.999
    old = PhoenixController(replace(controller.params, capacity_probing=False), name="no-probe")
    _run(ctx, old)
    assert old.state.capacity is not None and old.state.capacity < 0.5 * measured
    assert old.decisions[-1][1].metrics["desired_replicas"] == 8


def test_the_adapter_runs_the_operators_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    real = policy.decide

    def spy(*args: Any) -> Any:
        calls.append(args[-1])
        return real(*args)

    monkeypatch.setattr(policy, "decide", spy)
    ctx = make_context(_step_workload(10.0, 10.0, 0.0, 120.0), load_profile())
    controller = phoenix_controller(ctx)
    _run(ctx, controller)
    assert calls == [30.0 * k for k in range(1, len(calls) + 1)]
    assert len(calls) >= 120 // 30
    assert len(controller.decisions) == len(calls)


def test_phoenix_scales_up_on_a_load_step_and_explains_it() -> None:
    """10 -> 40 req/s at 90 s: the average-sized fleet (4) is short for good; Phoenix as shipped
    (requests weighed against the load test's token mix, its capacity as the prior) orders replicas
    and gets most of the traffic served within target."""
    profile = load_profile()
    ctx = make_context(_step_workload(10.0, 40.0, 90.0, 600.0), profile)
    static = _run(ctx, None)
    controller = phoenix_controller(ctx)
    result = _run(ctx, controller)
    assert result.scaling_actions >= 1
    # Least-pending routing spreads the step over the fixed fleet too; the ordered replicas still
    # serve clearly more of it within target (the first 120 s of their warm-up are lost to both).
    assert attainment(result.records, 3.0) >= 0.9
    assert attainment(result.records, 3.0) > attainment(static.records, 3.0) + 0.05
    assert attainment(result.records, 3.0, "urgent") >= 0.999
    ups = [d for _, d in controller.decisions if d.action == "scale-up"]
    assert ups and all("req/s at the measured mix now" in d.reason and "needs" in d.reason for d in ups)
    for _, d in controller.decisions:
        if d.replicas is not None:
            assert controller.params.min_replicas <= d.replicas <= controller.params.replica_cap


def test_with_slow_pods_a_confirmed_backlog_is_drained_within_a_minute() -> None:
    """The quick peak hour's held-out blocks with pods that take about 240 s to start (drawn
    lognormally, told within 30 %, as the benchmark runs them): the rise's overload is confirmed
    minutes before the replicas ordered for it serve. Planning that backlog to drain within the
    minute after they come (the default) holds the SLO over the peak; the same policy draining it
    over another warm-up orders too few and misses."""
    profile = load_profile()
    workload = build_workload(WorkloadOptions(quick=True), dict(profile.classes), 0, "test")
    ctx = make_context(
        workload, profile, quick=True, startup_s=240.0, warmup=BENCH_WARMUP, keep_records=False
    )
    shipped = phoenix_controller(ctx)
    over_a_warm_up = phoenix_controller(ctx)
    over_a_warm_up.params = replace(over_a_warm_up.params, drain_s=over_a_warm_up.params.warmup_s)
    held = run_controller(ctx, shipped, "phoenix", 0.0).figures["slo_attainment"]
    missed = run_controller(ctx, over_a_warm_up, "phoenix", 0.0).figures["slo_attainment"]
    assert held >= 0.99
    assert held > missed + 0.03, (held, missed)


def test_phoenix_adds_model_instances_when_replicas_cannot_help() -> None:
    """A blocking (Python-backend) model at its one-replica cap: queueing dominates, the delay is
    already minimal, so the loop adds model instances within bounds, which doubles throughput."""
    profile = load_profile()
    cost = BlockingBatchCost(0.1, 0.01)  # a batch of 8 takes 0.18 s: 44 req/s per instance
    workload = _step_workload(60.0, 60.0, 0.0, 240.0)
    ctx = make_context(workload, profile, cost=cost, max_replicas=1)
    batching = profile.batching.with_changes(priority_levels=0, default_priority_level=0)
    controller = phoenix_controller(ctx)
    assert not controller.params.inflight_batching and controller.params.replica_cap == 1
    settings = replace(ctx.settings, initial_replicas=1)
    result = run_fleet(
        workload.arrivals,
        cost,
        batching,
        settings,
        controller,
        3.0,
        dict(DEFAULT_CLASSES),
        horizon_s=workload.duration_s,
    )
    static = run_fleet(
        workload.arrivals,
        cost,
        batching,
        settings,
        None,
        3.0,
        dict(DEFAULT_CLASSES),
        horizon_s=workload.duration_s,
    )
    assert result.batching_changes >= 1
    final = [d.batching for d in result.decisions if d.batching is not None][-1]
    assert final is not None and 2 <= final.instance_count <= controller.params.max_instance_count
    assert any("one more model instance" in d.reason for d in result.decisions)
    assert attainment(result.records, 3.0) > attainment(static.records, 3.0) + 0.2


def test_phoenix_is_registered_for_the_benchmark() -> None:
    ctx = make_context(_step_workload(10.0, 10.0, 0.0, 90.0), load_profile())
    assert isinstance(REGISTRY["phoenix"](ctx), PhoenixController)
    report = run_bench(ctx, ["phoenix", "static-avg"])
    assert [r.name for r in report.runs] == ["phoenix", "static-avg"] and not report.missing
    figures = report.to_json()["policies"][0]
    assert figures["name"] == "phoenix" and 0.0 <= figures["slo_attainment"] <= 1.0
