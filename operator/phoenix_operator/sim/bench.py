"""Run several fleet policies on one workload and collect comparable figures.

Every policy sees the same arrivals, cost model, start-up delay, load balancer and batching
start point. Autoscalers start with the fleet the workload's first minutes need (the peak-hour
scenario's normal load) or, for a cold start, the static-avg fleet; static fleets run at their
own size; the oracle at what its plan needs at time 0. The headline figures are measured over
the workload's measured window (requests arriving in it, GPU time billed in it) — the peak
held, in the peak-hour scenario — and ``whole_run`` repeats them over the whole run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

from phoenix_operator.sim.controllers import (
    DEFAULT_POLICIES,
    REGISTRY,
    BenchContext,
    replica_capacity_rps,
    replica_load,
    size_for,
)
from phoenix_operator.sim.cost import BlockingBatchCost, LLMEngineCost
from phoenix_operator.sim.fleet import FleetResult, FleetSettings, run_fleet
from phoenix_operator.sim.metrics import json_number, summarize
from phoenix_operator.sim.profile import Profile
from phoenix_operator.sim.workloads import Workload


@dataclass
class PolicyRun:
    name: str
    result: FleetResult
    figures: dict[str, Any]
    wall_s: float
    note: str = ""


@dataclass
class BenchReport:
    context: BenchContext
    price_per_gpu_hour_usd: float
    runs: list[PolicyRun] = field(default_factory=list)
    #: Requested policies that are not registered (e.g. ``phoenix`` before the lead adds it).
    missing: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        ctx = self.context
        workload = ctx.workload.summary()
        workload.update(
            {
                "profile": ctx.profile.name,
                "startup_s": ctx.settings.startup_s,
                "load_balancer": ctx.settings.lb,
                "static_avg_replicas": ctx.static_avg,
                "static_peak_replicas": ctx.static_peak,
                "autoscaler_start_replicas": ctx.settings.initial_replicas,
                "max_replicas": ctx.settings.max_replicas,
                "replica_capacity_rps": round(ctx.replica_capacity_rps, 3),
                "price_per_gpu_hour_usd": self.price_per_gpu_hour_usd,
                "quick": ctx.quick,
            }
        )
        policies = []
        for run in self.runs:
            policies.append({"name": run.name, **_jsonable(run.figures)})
        return {"workload": workload, "slo_ttft_s": ctx.slo_ttft_s, "policies": policies}


def _jsonable(figures: dict[str, Any]) -> dict[str, Any]:
    return {
        key: json_number(value)
        if isinstance(value, float)
        else _jsonable(value)
        if isinstance(value, dict)
        else value
        for key, value in figures.items()
    }


def to_markdown(report: BenchReport) -> str:
    """The benchmark table as Markdown (for docs and pull requests)."""
    head = (
        "| policy | SLO att. | urgent att. | TTFT p50 s | p95 s | p99 s | GPU-h | cost $ | mean replicas "
        "| scaling | batching |"
    )
    lines = [head, "|" + " --- |" * 11]
    for run in report.runs:
        f = run.figures
        lines.append(
            f"| {run.name} | {pct(f['slo_attainment'])} | {pct(f['urgent_slo_attainment'])} "
            f"| {fmt_seconds(f['ttft_p50_s'])} | {fmt_seconds(f['ttft_p95_s'])} "
            f"| {fmt_seconds(f['ttft_p99_s'])} "
            f"| {f['gpu_hours']:.3f} | {f['cost_usd']:.2f} | {f['mean_replicas']:.2f} "
            f"| {f['scaling_actions']} | {f['batching_changes']} |"
        )
    return "\n".join(lines) + "\n"


def pct(value: float) -> str:
    """A fraction as a percentage for tables."""
    return "-" if math.isnan(value) else f"{100 * value:.2f}%"


def make_context(
    workload: Workload,
    profile: Profile,
    slo_ttft_s: float = 3.0,
    seed: int = 0,
    quick: bool = False,
    lb: str = "round-robin",
    max_replicas: int | None = None,
    startup_s: float | None = None,
    cost: LLMEngineCost | BlockingBatchCost | None = None,
) -> BenchContext:
    """Size the static fleets and the autoscalers' bounds for this workload."""
    cost = cost or LLMEngineCost(profile)
    mbs = profile.batching.max_batch_size
    capacity = replica_capacity_rps(workload, cost, mbs)
    mean_load, peak_load = replica_load(workload, cost, mbs, span=workload.measured)
    # Today's fleet: just enough capacity for the measured window's average load. The peak
    # fleet: its busiest minute at the planning utilisation (headroom), as a capacity planner
    # would size it.
    static_avg = size_for(mean_load)
    static_peak = max(static_avg, size_for(peak_load, profile.planning_utilization))
    # Autoscalers start with the fleet the workload's first minutes need at the planning
    # utilisation (the peak-hour scenario's normal load), or at static-avg for a cold start.
    start = static_avg
    if workload.start_window_s is not None:
        start = size_for(
            replica_load(workload, cost, mbs, span=workload.start_window_s)[1], profile.planning_utilization
        )
    settings = FleetSettings(
        initial_replicas=start,
        min_replicas=1,
        max_replicas=max_replicas or max(2 * static_peak, static_peak + 2),
        startup_s=profile.startup_s if startup_s is None else startup_s,
        lb=lb,
        batching_apply_s=profile.batching_apply_s,
        batching_pause_s=profile.batching_pause_s,
        seed=seed,
    )
    return BenchContext(
        workload=workload,
        profile=profile,
        cost=cost,
        slo_ttft_s=slo_ttft_s,
        settings=settings,
        static_avg=static_avg,
        static_peak=static_peak,
        replica_capacity_rps=capacity,
        seed=seed,
        quick=quick,
    )


def run_policy(ctx: BenchContext, name: str, price_per_gpu_hour_usd: float) -> PolicyRun:
    """Create the policy from the registry and simulate the workload under it."""
    started = time.perf_counter()
    controller = REGISTRY[name](ctx)
    # A policy that sizes its own start (static fleets, the oracle, Phoenix from its spec) says so.
    initial = ctx.settings.initial_replicas
    if isinstance(getattr(controller, "initial_replicas", None), int):
        initial = int(controller.initial_replicas)  # type: ignore[attr-defined]
    settings = replace(
        ctx.settings,
        initial_replicas=initial,
        max_replicas=max(ctx.settings.max_replicas, initial),
    )
    result = run_fleet(
        ctx.workload.arrivals,
        ctx.cost,
        ctx.profile.batching,
        settings,
        controller,
        ctx.slo_ttft_s,
        dict(ctx.profile.classes),
        horizon_s=ctx.workload.duration_s,
    )
    whole = (0.0, max(result.horizon_s, 1e-9))
    figures = measure(result, ctx.slo_ttft_s, price_per_gpu_hour_usd, ctx.workload.measured)
    figures.update(
        {
            "scaling_actions": result.scaling_actions,
            "batching_changes": result.batching_changes,
            "peak_replicas": max((row[3] for row in result.timeline), default=0),
        }
    )
    if ctx.workload.measured != whole:
        figures["whole_run"] = measure(result, ctx.slo_ttft_s, price_per_gpu_hour_usd, whole)
    wall = time.perf_counter() - started
    figures["wall_s"] = wall
    note = ""
    if getattr(controller, "feasible", True) is False:
        note = "no schedule met the SLO in every window within the search budget"
    return PolicyRun(name=name, result=result, figures=figures, wall_s=wall, note=note)


def measure(
    result: FleetResult, slo_ttft_s: float, price_per_gpu_hour_usd: float, window: tuple[float, float]
) -> dict[str, Any]:
    """Figures over one window: requests *arriving* in it, GPU time billed in it."""
    lo, hi = window
    last = hi >= result.horizon_s
    records = [r for r in result.records if lo <= r.arrival_s and (r.arrival_s < hi or last)]
    figures = summarize(records, slo_ttft_s)
    gpu_seconds = result.gpu_seconds(lo, hi)
    figures.update(
        {
            "window_s": [lo, hi],
            "gpu_hours": gpu_seconds / 3600.0,
            "cost_usd": gpu_seconds / 3600.0 * price_per_gpu_hour_usd,
            "mean_replicas": gpu_seconds / max(hi - lo, 1e-9),
        }
    )
    return figures


def run_bench(
    ctx: BenchContext,
    policies: tuple[str, ...] | list[str] = DEFAULT_POLICIES,
    price_per_gpu_hour_usd: float | None = None,
) -> BenchReport:
    price = ctx.profile.price_per_gpu_hour_usd if price_per_gpu_hour_usd is None else price_per_gpu_hour_usd
    report = BenchReport(context=ctx, price_per_gpu_hour_usd=price)
    for name in policies:
        if name not in REGISTRY:
            report.missing.append(name)
            continue
        report.runs.append(run_policy(ctx, name, price))
    return report


def fmt_seconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "never"
    return f"{value:.2f}"
