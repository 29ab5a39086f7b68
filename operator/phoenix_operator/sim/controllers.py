"""Peer baselines as their documentation recommends for LLM serving, and the policy registry.

Static fleets, HPA, KEDA, llm-d and Dynamo's planner, each modelled on its own source so the
benchmark races Phoenix (:mod:`phoenix_operator.sim.phoenix`) against what users run. Knobs tuned
on the training slice are in :data:`TUNING`, factories in :data:`REGISTRY`.
Details: docs/simulator.md#baselines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from phoenix_operator.sim.cost import BlockingBatchCost, LLMEngineCost
from phoenix_operator.sim.fleet import FleetSettings
from phoenix_operator.sim.interface import FleetCommand, FleetController, FleetView
from phoenix_operator.sim.profile import Profile
from phoenix_operator.sim.workloads import Workload

# --------------------------------------------------------------------------------------------
# HPA algorithm (pure functions + the behaviour state machine)
# --------------------------------------------------------------------------------------------

HPA_TOLERANCE = 0.1
HPA_SYNC_S = 15.0


@dataclass(frozen=True)
class HPAScalingPolicy:
    kind: Literal["Pods", "Percent"]
    value: int
    period_s: float


@dataclass(frozen=True)
class HPAScalingRules:
    stabilization_s: float
    policies: tuple[HPAScalingPolicy, ...]
    select: Literal["Max", "Min", "Disabled"] = "Max"


#: autoscaling/v2 defaults (HorizontalPodAutoscalerBehavior).
DEFAULT_SCALE_UP = HPAScalingRules(
    0.0, (HPAScalingPolicy("Percent", 100, 15.0), HPAScalingPolicy("Pods", 4, 15.0)), "Max"
)
DEFAULT_SCALE_DOWN = HPAScalingRules(300.0, (HPAScalingPolicy("Percent", 100, 15.0),), "Max")


def hpa_utilization_replicas(
    current: int,
    ready_values: Sequence[float],
    missing: int,
    target: float,
    tolerance: float = HPA_TOLERANCE,
) -> int:
    """``calcPlainMetricReplicas``: desired replicas from per-pod values of ready pods.

    ``missing`` pods (created, no metric yet) count as using the target on a scale-down and
    nothing on a scale-up, and a result that would flip direction is dropped.
    """
    if not ready_values:
        return current
    usage_ratio = (sum(ready_values) / len(ready_values)) / target
    if missing == 0:
        if abs(1.0 - usage_ratio) <= tolerance:
            return current
        return math.ceil(usage_ratio * len(ready_values))
    filled = list(ready_values) + [target if usage_ratio < 1.0 else 0.0] * missing
    new_ratio = (sum(filled) / len(filled)) / target
    if (
        abs(1.0 - new_ratio) <= tolerance
        or (usage_ratio < 1.0 and new_ratio > 1.0)
        or (usage_ratio > 1.0 and new_ratio < 1.0)
    ):
        return current
    new = math.ceil(new_ratio * len(filled))
    if (new_ratio < 1.0 and new > current) or (new_ratio > 1.0 and new < current):
        return current
    return new


def hpa_external_average_replicas(
    status_replicas: int, usage: float, target_per_pod: float, tolerance: float = HPA_TOLERANCE
) -> int:
    """``GetExternalPerPodMetricReplicas``: an AverageValue external metric (KEDA's default)."""
    replicas = max(status_replicas, 1)
    ratio = usage / (target_per_pod * replicas)
    if abs(1.0 - ratio) > tolerance:
        return math.ceil(usage / target_per_pod)
    return status_replicas


class HPABehavior:
    """Stabilisation windows and rate limits (``normalizeDesiredReplicasWithBehaviors``)."""

    def __init__(
        self, up: HPAScalingRules = DEFAULT_SCALE_UP, down: HPAScalingRules = DEFAULT_SCALE_DOWN
    ) -> None:
        self.up = up
        self.down = down
        self.recommendations: list[tuple[float, int]] = []
        self.up_events: list[tuple[float, int]] = []
        self.down_events: list[tuple[float, int]] = []
        self._initialised = False

    def stabilize(self, now: float, current: int, desired: int) -> int:
        if not self._initialised:
            self._initialised = True
            if self.down.stabilization_s > 0:
                # maybeInitScaleDownStabilizationWindow: a fresh HPA does not scale down at once.
                self.recommendations.append((now, current))
        up_rec = desired
        down_rec = desired
        up_cut = now - self.up.stabilization_s
        down_cut = now - self.down.stabilization_s
        for t, rec in self.recommendations:
            if t > up_cut:
                up_rec = min(up_rec, rec)
            if t > down_cut:
                down_rec = max(down_rec, rec)
        result = current
        if result < up_rec:
            result = up_rec
        if result > down_rec:
            result = down_rec
        self.recommendations.append((now, desired))
        keep_after = now - max(self.up.stabilization_s, self.down.stabilization_s)
        self.recommendations = [(t, r) for t, r in self.recommendations if t > keep_after]
        return result

    @staticmethod
    def _changes(events: list[tuple[float, int]], now: float, period: float) -> int:
        return sum(n for t, n in events if t > now - period)

    def scale_up_limit(self, now: float, current: int) -> int:
        rules = self.up
        if rules.select == "Disabled":
            return current
        result: int | None = None
        for pol in rules.policies:
            start = (
                current
                - self._changes(self.up_events, now, pol.period_s)
                + self._changes(self.down_events, now, pol.period_s)
            )
            proposed = start + pol.value if pol.kind == "Pods" else math.ceil(start * (1 + pol.value / 100.0))
            if result is None:
                result = proposed
            else:
                result = max(result, proposed) if rules.select == "Max" else min(result, proposed)
        return current if result is None else result

    def scale_down_limit(self, now: float, current: int) -> int:
        rules = self.down
        if rules.select == "Disabled":
            return current
        result: int | None = None
        for pol in rules.policies:
            start = (
                current
                + self._changes(self.down_events, now, pol.period_s)
                - self._changes(self.up_events, now, pol.period_s)
            )
            proposed = start - pol.value if pol.kind == "Pods" else int(start * (1 - pol.value / 100.0))
            if result is None:
                result = proposed
            else:
                result = min(result, proposed) if rules.select == "Max" else max(result, proposed)
        return current if result is None else result

    def rate_limit(self, now: float, current: int, desired: int, min_r: int, max_r: int) -> int:
        """``convertDesiredReplicasWithBehaviorRate``."""
        if desired > current:
            limit = max(self.scale_up_limit(now, current), current)
            return min(desired, min(max_r, limit))
        if desired < current:
            limit = min(self.scale_down_limit(now, current), current)
            return max(desired, max(min_r, limit))
        return max(min_r, min(max_r, desired))

    def normalize(self, now: float, current: int, desired: int, min_r: int, max_r: int) -> int:
        stabilized = self.stabilize(now, current, desired)
        final = self.rate_limit(now, current, stabilized, min_r, max_r)
        if final > current:
            self.up_events.append((now, final - current))
        elif final < current:
            self.down_events.append((now, current - final))
        horizon = max([p.period_s for p in (*self.up.policies, *self.down.policies)] or [0.0])
        self.up_events = [e for e in self.up_events if e[0] > now - horizon]
        self.down_events = [e for e in self.down_events if e[0] > now - horizon]
        return final


# --------------------------------------------------------------------------------------------
# Controllers
# --------------------------------------------------------------------------------------------


def behavior_with(scale_down_stabilization_s: float = DEFAULT_SCALE_DOWN.stabilization_s) -> HPABehavior:
    """HPA's default behaviour with another ``behavior.scaleDown.stabilizationWindowSeconds``."""
    return HPABehavior(down=HPAScalingRules(scale_down_stabilization_s, DEFAULT_SCALE_DOWN.policies))


@dataclass
class StaticController:
    """A fixed fleet: starts at its size (``initial_replicas``, which the bench reads) and never acts."""

    name: str
    initial_replicas: int
    interval_s: float = 60.0

    def decide(self, now: float, view: FleetView) -> FleetCommand:
        return FleetCommand(reason=f"static fleet of {self.initial_replicas}")


@dataclass
class HPAController:
    """HPA on in-flight requests per pod (running + waiting, a Pods metric with an AverageValue
    target), GKE's recommendation for LLM serving; the target comes from a load test."""

    target_in_flight: float = 32.0
    name: str = "hpa"
    interval_s: float = HPA_SYNC_S
    tolerance: float = HPA_TOLERANCE
    behavior: HPABehavior = field(default_factory=HPABehavior)

    def decide(self, now: float, view: FleetView) -> FleetCommand:
        current = view.desired_replicas
        if not view.replica_running:
            return FleetCommand(reason="no ready pod reports in-flight requests: HPA keeps the scale")
        per_pod = [float(r + w) for r, w in zip(view.replica_running, view.replica_waiting, strict=True)]
        desired = hpa_utilization_replicas(
            current, per_pod, view.starting_replicas, self.target_in_flight, self.tolerance
        )
        final = self.behavior.normalize(now, current, desired, view.min_replicas, view.max_replicas)
        mean = sum(per_pod) / len(per_pod)
        return FleetCommand(
            target_replicas=final,
            reason=f"in-flight {mean:.1f}/pod vs target {self.target_in_flight:g}: desired {desired}, "
            f"after behaviour {final}",
        )


@dataclass
class KEDAController:
    """KEDA's Prometheus scaler on ``sum(waiting requests)``, AverageValue ``threshold`` per pod
    (vLLM production-stack's default 5). Between 1 and N replicas the HPA asks KEDA's metrics
    server at every sync, so the metric is read every 15 s; ``behavior`` is the HPA's, with the
    scale-down stabilisation set through ``advanced.horizontalPodAutoscalerConfig``."""

    threshold: float = 5.0
    name: str = "keda"
    interval_s: float = HPA_SYNC_S
    tolerance: float = HPA_TOLERANCE
    behavior: HPABehavior = field(default_factory=HPABehavior)

    def decide(self, now: float, view: FleetView) -> FleetCommand:
        current = view.desired_replicas
        waiting = view.observation.pending_requests
        if waiting is None:
            return FleetCommand(reason="no waiting-requests metric: keeping the scale")
        status_replicas = view.ready_replicas + view.starting_replicas
        desired = hpa_external_average_replicas(status_replicas, waiting, self.threshold, self.tolerance)
        final = self.behavior.normalize(now, current, desired, view.min_replicas, view.max_replicas)
        return FleetCommand(
            target_replicas=final,
            reason=f"waiting {waiting:.0f} / {self.threshold:g} per pod: desired {desired}, "
            f"after behaviour {final}",
        )


#: llm-d's published TPOT target (P90 TPOT 100 ms in its SLO-aware autoscaling results).
LLMD_TPOT_TARGET_S = 0.1


def llmd_slo_signal(
    ttft_p90_s: float | None,
    tpot_p90_s: float | None,
    ttft_target_s: float,
    tpot_target_s: float = LLMD_TPOT_TARGET_S,
    cap: float = 2.0,
) -> float | None:
    """llm-d's SLO signal: max(P90 TTFT / TTFT target, P90 TPOT / TPOT target), capped."""
    ratios = [v / t for v, t in ((ttft_p90_s, ttft_target_s), (tpot_p90_s, tpot_target_s)) if v is not None]
    return min(cap, max(ratios)) if ratios else None


@dataclass
class LLMDSLOController:
    """llm-d's SLO-aware scaling: the SLO signal smoothed over 45 s, through KEDA at each HPA
    sync: scale up when the signal discounted for pods still warming is above 0.55 (HPA's
    proportional math on signal / 0.55), one pod down when it is below 0.40; HPA behaviour
    (stabilisation, rate limits) on top."""

    ttft_target_s: float = 3.0
    tpot_target_s: float = LLMD_TPOT_TARGET_S
    scale_up_above: float = 0.55
    scale_down_below: float = 0.40
    smoothing_s: float = 45.0
    name: str = "llmd-slo"
    interval_s: float = HPA_SYNC_S
    behavior: HPABehavior = field(default_factory=HPABehavior)
    samples: list[tuple[float, float]] = field(default_factory=list)

    def decide(self, now: float, view: FleetView) -> FleetCommand:
        current = view.desired_replicas
        raw = llmd_slo_signal(view.ttft_p90_s, view.tpot_p90_s, self.ttft_target_s, self.tpot_target_s)
        if raw is not None:
            self.samples.append((now, raw))
        self.samples = [(t, s) for t, s in self.samples if t > now - self.smoothing_s - 1e-9]
        if not self.samples:
            return FleetCommand(reason="no latency data: keeping the scale")
        smoothed = sum(s for _, s in self.samples) / len(self.samples)
        serving = view.ready_replicas + view.starting_replicas
        # Scale-up reads the signal discounted for pods still warming (they will take load).
        signal = smoothed * view.ready_replicas / serving if serving else smoothed
        desired = current
        if signal > self.scale_up_above:
            desired = max(current + 1, math.ceil(current * signal / self.scale_up_above))
        elif smoothed < self.scale_down_below:
            desired = current - 1
        final = self.behavior.normalize(now, current, desired, view.min_replicas, view.max_replicas)
        return FleetCommand(
            target_replicas=final,
            reason=f"SLO signal {signal:.2f} (band 0.40-0.55): desired {desired}, after behaviour {final}",
        )


PREDICTORS = ("constant", "linear")


@dataclass
class DynamoPlannerController:
    """NVIDIA Dynamo's SLA planner, throughput-based, for aggregated serving: every 180 s it
    predicts the next interval's request rate and mean input/output lengths and divides the
    predicted work by a replica's profiled throughput at those lengths (here the cost model's
    GPU seconds per request at full load — the curve a profiling sweep measures)."""

    cost: LLMEngineCost | BlockingBatchCost
    max_batch_size: int = 1
    predictor: str = "constant"
    #: Share of the profiled throughput a replica is planned at.
    utilization: float = 1.0
    name: str = "dynamo-planner"
    interval_s: float = 180.0
    history: list[tuple[float, float, float, float]] = field(default_factory=list)

    def _predict(self, now: float) -> tuple[float, float, float]:
        _, rate, prompt, output = self.history[-1]
        if self.predictor == "linear" and len(self.history) >= 2:
            t = np.array([h[0] for h in self.history[-3:]])
            r = np.array([h[1] for h in self.history[-3:]])
            slope = float(np.polyfit(t, r, 1)[0])
            rate = max(0.0, rate + slope * self.interval_s)
        return rate, prompt, output

    def decide(self, now: float, view: FleetView) -> FleetCommand:
        obs = view.observation
        if obs.request_rate is None or obs.request_rate <= 0:
            return FleetCommand(reason="no traffic observed: keeping the scale")
        prompt = obs.mean_prompt_tokens or (self.history[-1][2] if self.history else 1.0)
        output = obs.mean_output_tokens or (self.history[-1][3] if self.history else 1.0)
        self.history.append((now, float(obs.request_rate), float(prompt), float(output)))
        rate, p, o = self._predict(now)
        if isinstance(self.cost, LLMEngineCost):
            pi, oi = self.cost.clip(round(p), round(o))
            per_request = self.cost.service_time(pi, oi, float(pi) ** 2)
        else:
            per_request = self.cost.batch_time(self.max_batch_size) / self.max_batch_size
        desired = size_for(rate * per_request, self.utilization)
        desired = max(view.min_replicas, min(view.max_replicas, desired))
        return FleetCommand(
            target_replicas=desired,
            reason=f"predicted {rate:.1f} req/s at ISL {p:.0f} / OSL {o:.0f} ({self.predictor}): {desired}",
        )


# --------------------------------------------------------------------------------------------
# Sizing and the registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchContext:
    """What a policy factory may know about the benchmark it is created for."""

    workload: Workload
    profile: Profile
    cost: LLMEngineCost | BlockingBatchCost
    slo_ttft_s: float
    #: Fleet settings the autoscalers run with (initial = the fleet fitting the start of the
    #: workload, or static-avg for a cold start; min/max, start-up, LB).
    settings: FleetSettings
    #: Fixed fleets: sized for the measured window's average load, and its busiest minute at
    #: the planning utilisation. Autoscalers start at ``settings.initial_replicas``.
    static_avg: int
    static_peak: int
    #: Per-replica capacity, requests/s at full load, for the workload's token mix.
    replica_capacity_rps: float
    seed: int = 0
    quick: bool = False
    #: Policy name -> knob values chosen on the training slice (:data:`TUNING`); a policy
    #: absent here runs with its documented defaults.
    tuned: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Keep each run's per-request records once its figures are measured (the plots read them;
    #: a simulated day holds millions, so a run without plots drops them).
    keep_records: bool = True

    def knobs(self, policy: str) -> dict[str, Any]:
        """The policy's knobs: its defaults, overridden by what tuning chose."""
        return {**{k: v[0] for k, v in TUNING.get(policy, {}).items()}, **dict(self.tuned.get(policy, {}))}


def service_times(
    workload: Workload, cost: LLMEngineCost | BlockingBatchCost, max_batch_size: int = 1
) -> np.ndarray:
    """GPU seconds each request of the workload costs a replica running at full load."""
    if isinstance(cost, BlockingBatchCost):
        per = cost.batch_time(max_batch_size) / max_batch_size
        return np.full(len(workload.arrivals), per)
    out = np.empty(len(workload.arrivals))
    for i, a in enumerate(workload.arrivals):
        p, o = cost.clip(a.prompt_tokens, a.output_tokens)
        out[i] = cost.service_time(p, o, float(p) ** 2)
    return out


def replica_load(
    workload: Workload,
    cost: LLMEngineCost | BlockingBatchCost,
    max_batch_size: int = 1,
    window_s: float = 60.0,
    span: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """(mean, peak over any ``window_s``) load in replicas' worth of work, over ``span``
    (simulated seconds; default the whole run).

    Work, not request count, is what a replica runs out of: in the Azure conversation trace the
    busiest minutes by requests carry shorter answers, so they are not the busiest by GPU time.
    """
    lo, hi = span or (0.0, workload.duration_s)
    length = hi - lo
    if not workload.arrivals or length <= 0:
        return 0.0, 0.0
    t = np.fromiter((a.time_s for a in workload.arrivals), dtype=float, count=len(workload.arrivals))
    inside = (t >= lo) & (t < hi)
    if not inside.any():
        return 0.0, 0.0
    s = service_times(workload, cost, max_batch_size)[inside]
    t = t[inside]
    csum = np.concatenate([[0.0], np.cumsum(s)])
    ends = np.searchsorted(t, t + window_s, side="left")
    peak = float((csum[ends] - csum[np.arange(len(t))]).max()) / min(window_s, length)
    return float(s.sum()) / length, peak


def bound_gpu_seconds(
    workload: Workload,
    cost: LLMEngineCost | BlockingBatchCost,
    max_batch_size: int,
    window: tuple[float, float],
    min_replicas: int = 1,
) -> float:
    """Work-conservation lower bound on the GPU time any policy bills in ``window``.

    A replica completes at most one second of full-load work per second, so the GPU-seconds
    billed are at least the full-load GPU seconds of the requests arriving in the window (those
    arriving before it that are still served there only add to the true need); and at least
    ``min_replicas`` are held throughout. Capacity at the SLO is at most the full-load capacity,
    so this bound is valid (if loose) for any SLO.
    """
    lo, hi = window
    if not workload.arrivals:
        return min_replicas * (hi - lo)
    t = np.fromiter((a.time_s for a in workload.arrivals), dtype=float, count=len(workload.arrivals))
    inside = (t >= lo) & (t < hi)
    work = float(service_times(workload, cost, max_batch_size)[inside].sum())
    return max(work, min_replicas * (hi - lo))


def replica_capacity_rps(
    workload: Workload, cost: LLMEngineCost | BlockingBatchCost, max_batch_size: int = 1
) -> float:
    """Requests/s one replica sustains at full load for this workload's average request."""
    if not workload.arrivals:
        return 1.0
    return 1.0 / float(service_times(workload, cost, max_batch_size).mean())


def size_for(load_replicas: float, utilization: float = 1.0) -> int:
    """Replicas so that a load (in replicas' worth of work) runs each at most at ``utilization``."""
    return max(1, math.ceil(load_replicas / utilization - 1e-9))


ControllerFactory = Callable[[BenchContext], FleetController]

#: Knobs each policy may have tuned on the training slice, candidates first-is-default; every
#: tuned policy gets the same budget (at most two knobs, at most four training runs).
TUNING: dict[str, dict[str, tuple[Any, ...]]] = {
    "phoenix-tuned": {"interval_s": (30, 15), "scale_down_stabilization_s": (300, 120)},
    "hpa": {"target_in_flight": (32.0, 16.0, 64.0, 128.0)},
    "keda": {"threshold": (5.0, 1.0), "scale_down_stabilization_s": (300.0, 120.0)},
    "llmd-slo": {"ttft_target_scale": (1.0, 0.5), "scale_down_stabilization_s": (300.0, 120.0)},
    "dynamo-planner": {"predictor": PREDICTORS, "utilization": (1.0, 0.8)},
}


def _static_avg(ctx: BenchContext) -> FleetController:
    return StaticController("static-avg", ctx.static_avg)


def _static_peak(ctx: BenchContext) -> FleetController:
    return StaticController("static-peak", ctx.static_peak)


def _static_best(ctx: BenchContext) -> FleetController:
    from phoenix_operator.sim.bench import smallest_static_fleet

    return StaticController("static-best", smallest_static_fleet(ctx))


def _hpa(ctx: BenchContext) -> FleetController:
    k = ctx.knobs("hpa")
    return HPAController(target_in_flight=float(k["target_in_flight"]))


def _keda(ctx: BenchContext) -> FleetController:
    k = ctx.knobs("keda")
    return KEDAController(
        threshold=float(k["threshold"]), behavior=behavior_with(float(k["scale_down_stabilization_s"]))
    )


def _llmd_slo(ctx: BenchContext) -> FleetController:
    k = ctx.knobs("llmd-slo")
    return LLMDSLOController(
        ttft_target_s=ctx.slo_ttft_s * float(k["ttft_target_scale"]),
        behavior=behavior_with(float(k["scale_down_stabilization_s"])),
    )


def _dynamo(ctx: BenchContext) -> FleetController:
    k = ctx.knobs("dynamo-planner")
    return DynamoPlannerController(
        ctx.cost, ctx.profile.batching.max_batch_size, str(k["predictor"]), float(k["utilization"])
    )


def _oracle(ctx: BenchContext) -> FleetController:
    from phoenix_operator.sim.oracle import oracle_controller

    return oracle_controller(ctx)


def _phoenix(ctx: BenchContext) -> FleetController:
    # Lazy: the adapter imports the operator's policy (pydantic models, Triton config renderer).
    from phoenix_operator.sim.phoenix import phoenix_controller

    return phoenix_controller(ctx)


def _phoenix_uncalibrated(ctx: BenchContext) -> FleetController:
    from phoenix_operator.sim.phoenix import phoenix_controller

    return phoenix_controller(ctx, name="phoenix-uncalibrated", calibrated=False)


def _phoenix_tuned(ctx: BenchContext) -> FleetController:
    from phoenix_operator.sim.phoenix import phoenix_controller

    k = ctx.knobs("phoenix-tuned")
    return phoenix_controller(
        ctx,
        name="phoenix-tuned",
        interval_s=int(k["interval_s"]),
        scale_down_stabilization_s=int(k["scale_down_stabilization_s"]),
    )


#: Policy name -> factory. ``phoenix`` is the operator's control loop as it ships (through the
#: adapter in :mod:`phoenix_operator.sim.phoenix`); ``register_controller`` adds or replaces entries.
REGISTRY: dict[str, ControllerFactory] = {
    "phoenix": _phoenix,
    "phoenix-tuned": _phoenix_tuned,
    "phoenix-uncalibrated": _phoenix_uncalibrated,
    "oracle": _oracle,
    "hpa": _hpa,
    "keda": _keda,
    "llmd-slo": _llmd_slo,
    "dynamo-planner": _dynamo,
    "static-best": _static_best,
    "static-avg": _static_avg,
    "static-peak": _static_peak,
}

#: The fixed fleets' factories (the benchmark shares their runs between names of one size).
REGISTRY_STATIC: dict[str, ControllerFactory] = {
    "static-avg": _static_avg,
    "static-peak": _static_peak,
    "static-best": _static_best,
}

#: Report order of the benchmark.
DEFAULT_POLICIES: tuple[str, ...] = (
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


def register_controller(name: str, factory: ControllerFactory) -> None:
    """Add or replace a policy in the registry."""
    REGISTRY[name] = factory
