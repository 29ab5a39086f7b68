"""Peer baselines, implemented from their documented algorithms, and the policy registry.

* ``static-avg`` / ``static-peak`` — a fixed fleet sized for the average / the peak minute.
* ``hpa`` — Kubernetes HPA (autoscaling/v2) on GPU utilisation: ``replica_calculator.go``'s
  ``calcPlainMetricReplicas`` (10 % tolerance, pods without a metric assumed at target on
  scale-down and at 0 on scale-up) and ``horizontal.go``'s behaviour normalisation (scale-down
  stabilisation = highest recommendation of the last 300 s; scale-up at most max(100 %, 4 pods)
  per 15 s; scale-down at most 100 % per 15 s), synced every 15 s.
* ``keda`` — KEDA's Prometheus scaler on waiting requests (threshold 5 per pod, AverageValue),
  polled every 30 s, HPA's external-metric math and the same behaviour underneath.
* ``llmd`` — llm-d's saturation band: scale up when the fleet's average saturation exceeds 0.55,
  down (one pod at a time) below 0.40; a pod's saturation is the larger of KV use / 0.8 and
  waiting / 5 (llm-d workload-variant-autoscaler's kvCacheThreshold and queueLengthThreshold).
* ``oracle`` — see :mod:`phoenix_operator.sim.oracle`.

Policies are created from a :class:`BenchContext` by the factories in :data:`REGISTRY`; the
control-loop policy is ``phoenix`` (the adapter in :mod:`phoenix_operator.sim.phoenix`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

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
    """HPA on the pods' average GPU utilisation (DCGM_FI_DEV_GPU_UTIL via a metrics adapter)."""

    target_utilization: float = 0.8
    name: str = "hpa"
    interval_s: float = HPA_SYNC_S
    tolerance: float = HPA_TOLERANCE
    behavior: HPABehavior = field(default_factory=HPABehavior)

    def decide(self, now: float, view: FleetView) -> FleetCommand:
        util = view.observation.gpu_utilization
        current = view.desired_replicas
        if util is None:
            return FleetCommand(reason="no GPU utilisation metric: HPA keeps the scale")
        desired = hpa_utilization_replicas(
            current,
            [util] * view.ready_replicas,
            view.starting_replicas,
            self.target_utilization,
            self.tolerance,
        )
        final = self.behavior.normalize(now, current, desired, view.min_replicas, view.max_replicas)
        return FleetCommand(
            target_replicas=final,
            reason=f"gpu util {util:.2f} vs target {self.target_utilization:.2f}: desired {desired}, "
            f"after behaviour {final}",
        )


@dataclass
class KEDAController:
    """KEDA Prometheus scaler on ``sum(waiting requests)`` with an AverageValue target per pod."""

    threshold: float = 5.0
    polling_s: float = 30.0
    name: str = "keda"
    interval_s: float = HPA_SYNC_S
    tolerance: float = HPA_TOLERANCE
    behavior: HPABehavior = field(default_factory=HPABehavior)
    _metric: float | None = None
    _polled_at: float = -math.inf

    def decide(self, now: float, view: FleetView) -> FleetCommand:
        if now - self._polled_at >= self.polling_s - 1e-9:
            self._metric = view.observation.pending_requests
            self._polled_at = now
        current = view.desired_replicas
        if self._metric is None:
            return FleetCommand(reason="no waiting-requests metric: keeping the scale")
        status_replicas = view.ready_replicas + view.starting_replicas
        desired = hpa_external_average_replicas(status_replicas, self._metric, self.threshold, self.tolerance)
        final = self.behavior.normalize(now, current, desired, view.min_replicas, view.max_replicas)
        return FleetCommand(
            target_replicas=final,
            reason=f"waiting {self._metric:.0f} / {self.threshold:g} per pod: desired {desired}, "
            f"after behaviour {final}",
        )


def llmd_saturation(
    kv_utilization: float, waiting: int, kv_threshold: float = 0.8, queue_threshold: float = 5.0
) -> float:
    """One pod's saturation: how close it is to llm-d's saturated state (1.0 = saturated)."""
    return max(kv_utilization / kv_threshold, waiting / queue_threshold)


@dataclass
class LLMDController:
    """llm-d's SLO-aware band on fleet saturation (scale up above 0.55, down below 0.40)."""

    scale_up_above: float = 0.55
    scale_down_below: float = 0.40
    kv_threshold: float = 0.8
    queue_threshold: float = 5.0
    name: str = "llmd"
    interval_s: float = 30.0

    def decide(self, now: float, view: FleetView) -> FleetCommand:
        sats = [
            llmd_saturation(kv, w, self.kv_threshold, self.queue_threshold)
            for kv, w in zip(view.replica_saturation, view.replica_waiting, strict=True)
        ]
        current = view.desired_replicas
        total = sum(sats)
        # Pods still starting count as capacity with no load: no double scale-up while warming.
        capacity = max(view.ready_replicas + view.starting_replicas, 1)
        avg = total / capacity
        desired = current
        if avg > self.scale_up_above:
            desired = max(current + 1, math.ceil(total / self.scale_up_above))
        elif (
            avg < self.scale_down_below
            and view.starting_replicas == 0
            and current > 1
            and total / (current - 1) <= self.scale_up_above
        ):
            desired = current - 1
        desired = max(view.min_replicas, min(view.max_replicas, desired))
        return FleetCommand(target_replicas=desired, reason=f"avg saturation {avg:.2f}: desired {desired}")


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


def _static_avg(ctx: BenchContext) -> FleetController:
    return StaticController("static-avg", ctx.static_avg)


def _static_peak(ctx: BenchContext) -> FleetController:
    return StaticController("static-peak", ctx.static_peak)


def _hpa(ctx: BenchContext) -> FleetController:
    return HPAController()


def _keda(ctx: BenchContext) -> FleetController:
    return KEDAController()


def _llmd(ctx: BenchContext) -> FleetController:
    return LLMDController()


def _oracle(ctx: BenchContext) -> FleetController:
    from phoenix_operator.sim.oracle import oracle_controller

    return oracle_controller(ctx)


def _phoenix(ctx: BenchContext) -> FleetController:
    # Lazy: the adapter imports the operator's policy (pydantic models, Triton config renderer).
    from phoenix_operator.sim.phoenix import phoenix_controller

    return phoenix_controller(ctx)


#: Policy name -> factory. ``phoenix`` is the operator's control loop through the adapter in
#: :mod:`phoenix_operator.sim.phoenix`; ``register_controller`` adds or replaces entries.
REGISTRY: dict[str, ControllerFactory] = {
    "phoenix": _phoenix,
    "oracle": _oracle,
    "hpa": _hpa,
    "keda": _keda,
    "llmd": _llmd,
    "static-avg": _static_avg,
    "static-peak": _static_peak,
}

#: Report order of the benchmark.
DEFAULT_POLICIES: tuple[str, ...] = ("phoenix", "oracle", "hpa", "keda", "llmd", "static-avg", "static-peak")


def register_controller(name: str, factory: ControllerFactory) -> None:
    """Add or replace a policy (the lead's ``phoenix`` policy registers here)."""
    REGISTRY[name] = factory
