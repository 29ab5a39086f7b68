"""Phoenix's control policy: replicas and Triton batching from one Observation (pure, no I/O).

Everything the policy remembers is in :class:`PolicyState`, passed in and returned, and the
clock is an argument, so the same code runs in the operator (state kept in memory and
summarised in status), in the simulator (`phoenix bench`, `phoenix plan`) and in property tests.

How it decides, in one paragraph. TTFT explodes only when a replica saturates, so waiting for a
TTFT breach is too late when a new replica needs minutes to warm up. The policy therefore
*feeds forward* on load: it learns each replica's capacity (requests/s a replica sustains with
TTFT under target, learned from the fleet's own history) and keeps enough replicas for the
forecast rate (recent peak plus trend over the warm-up time) at a target utilisation. TTFT is
the *feedback*: a breach (overall, or of the most urgent class first) scales up within one
interval even if the load model disagrees, and also teaches the model that capacity is lower.
Replicas still warming up count as capacity, so a breach during warm-up does not double the
scale-up. Scale-down needs TTFT slack (hysteresis band), respects a stabilization window (the
highest recommendation in the window wins, as in Kubernetes' HPA) and steps down gradually.
Batching moves one step at a time within its bounds and only when the fleet is stable: wider
(longer queue delay, larger preferred batch) when TTFT has slack and GPUs are busy, narrower
when queueing dominates TTFT; a step that made TTFT worse is reverted and not retried for a
while. Replicas and batching are decided in one pass so they never fight: no batching change
while a scale-up is in flight or in the interval of a scaling action.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from phoenix_operator.api.models import PhoenixDeploymentSpec
from phoenix_operator.control.observation import Observation
from phoenix_operator.render.tritonconfig import BatchingConfig


@dataclass(frozen=True)
class PolicyParams:
    """The knobs and bounds of one deployment, read from its spec."""

    min_replicas: int
    max_replicas: int
    gpus_per_replica: int
    gpu_budget: int | None
    ttft_target_s: float
    #: Class name -> TTFT p95 target; the first entry is the most urgent class.
    class_targets: Mapping[str, float]
    interval_s: float
    scale_up_stabilization_s: float
    scale_down_stabilization_s: float
    tune_batching: bool
    max_batch_size: int
    min_queue_delay_us: int
    max_queue_delay_us: int
    max_preferred_batch_size: int
    min_instance_count: int
    max_instance_count: int
    #: Expected time from scale-up to a serving replica (image pull + model load).
    warmup_s: float = 120.0
    #: Fraction of learned capacity the feed-forward plans for (headroom for bursts).
    target_utilization: float = 0.75
    #: Scale down only while TTFT p95 is below this fraction of target (hysteresis band).
    scale_down_band: float = 0.6
    #: Widen batching only while TTFT p95 is below this fraction of target.
    batching_slack_band: float = 0.5
    #: Prior for a replica's capacity (req/s) until the fleet has taught the policy better.
    initial_capacity_rps: float | None = None

    @property
    def replica_cap(self) -> int:
        """Most replicas allowed: maxReplicas and the GPU budget, whichever binds first."""
        cap = self.max_replicas
        if self.gpu_budget is not None and self.gpus_per_replica > 0:
            cap = min(cap, self.gpu_budget // self.gpus_per_replica)
        return max(cap, self.min_replicas)

    @property
    def urgent_class(self) -> str | None:
        return next(iter(self.class_targets), None)

    @classmethod
    def from_spec(cls, spec: PhoenixDeploymentSpec, **overrides: float | int | None) -> PolicyParams:
        auto, bounds = spec.autoscaling, spec.batching.bounds
        classes = sorted(spec.priority.classes, key=lambda c: c.level) if spec.priority else []
        params = cls(
            min_replicas=auto.min_replicas,
            max_replicas=auto.max_replicas,
            gpus_per_replica=spec.triton.gpus_per_replica,
            gpu_budget=auto.gpu_budget,
            ttft_target_s=auto.ttft_p95_target_seconds,
            class_targets={c.name: c.ttft_target_seconds for c in classes},
            interval_s=float(auto.interval_seconds),
            scale_up_stabilization_s=float(auto.scale_up_stabilization_seconds),
            scale_down_stabilization_s=float(auto.scale_down_stabilization_seconds),
            tune_batching=auto.tune_batching and spec.batching.enabled,
            max_batch_size=spec.model.max_batch_size,
            min_queue_delay_us=bounds.min_queue_delay_microseconds,
            max_queue_delay_us=bounds.max_queue_delay_microseconds,
            max_preferred_batch_size=min(
                spec.model.max_batch_size, bounds.max_preferred_batch_size or spec.model.max_batch_size
            ),
            min_instance_count=bounds.min_instance_count,
            max_instance_count=bounds.max_instance_count,
        )
        return replace(params, **overrides)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FleetState:
    """What Kubernetes and Triton say about the fleet right now."""

    desired_replicas: int
    ready_replicas: int
    batching: BatchingConfig

    @property
    def warming(self) -> int:
        return max(0, self.desired_replicas - self.ready_replicas)


@dataclass(frozen=True)
class BatchingTrial:
    """A batching step under evaluation: revert it if TTFT got worse."""

    applied_at: float
    previous: BatchingConfig
    ttft_before_s: float
    direction: str  # "widen" | "narrow"


@dataclass(frozen=True)
class PolicyState:
    #: (time, replicas) recommendations, for the stabilization windows.
    recommendations: tuple[tuple[float, int], ...] = ()
    #: (time, request rate) history for the trend.
    rates: tuple[tuple[float, float], ...] = ()
    #: Learned sustainable requests/s per replica.
    capacity_rps: float | None = None
    last_scale_at: float | None = None
    trial: BatchingTrial | None = None
    last_batching_at: float | None = None
    #: Direction ("widen"/"narrow") not to retry before the given time, after a revert.
    blocked: tuple[str, float] | None = None


@dataclass(frozen=True)
class Decision:
    """One decision: what to do, why, and the numbers behind it."""

    action: str  # hold | scale-up | scale-down | batching | revert-batching
    summary: str
    reason: str
    replicas: int | None = None
    batching: BatchingConfig | None = None
    metrics: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def changes_something(self) -> bool:
        return self.replicas is not None or self.batching is not None


def _ratio(value: float | None, target: float) -> float | None:
    return None if value is None else value / target


def _trend_rps_per_s(rates: tuple[tuple[float, float], ...]) -> float:
    """Least-squares slope of the recent request rate (req/s per s); 0 with too few points."""
    if len(rates) < 3:
        return 0.0
    ts = [t for t, _ in rates]
    vs = [v for _, v in rates]
    mt, mv = sum(ts) / len(ts), sum(vs) / len(vs)
    den = sum((t - mt) ** 2 for t in ts)
    return 0.0 if den == 0 else sum((t - mt) * (v - mv) for t, v in zip(ts, vs, strict=True)) / den


def _clamp(value: int, params: PolicyParams) -> int:
    return max(params.min_replicas, min(params.replica_cap, value))


def decide(
    params: PolicyParams,
    obs: Observation,
    fleet: FleetState,
    state: PolicyState,
    now: float,
) -> tuple[Decision, PolicyState]:
    """One control-loop step. Returns the decision and the state to pass to the next step."""
    metrics: dict[str, float | None] = {
        "ttft_p95_s": obs.ttft_p95_s,
        "target_s": params.ttft_target_s,
        "request_rate": obs.request_rate,
        "queue_time_s": obs.queue_time_s,
        "compute_time_s": obs.compute_time_s,
        "mean_batch_size": obs.mean_batch_size,
        "gpu_utilization": obs.gpu_utilization,
        "ready_replicas": float(fleet.ready_replicas),
        "desired_replicas": float(fleet.desired_replicas),
    }
    if not obs.usable:
        why = obs.stale_reason or obs.missing.get("ttft_p95_s") or "no TTFT data"
        return Decision("hold", "holding: metrics unusable", f"fail-static: {why}", metrics=metrics), state

    assert obs.ttft_p95_s is not None
    ratio = obs.ttft_p95_s / params.ttft_target_s
    urgent = params.urgent_class
    urgent_ratio = (
        _ratio(obs.ttft_p95_by_class_s.get(urgent), params.class_targets[urgent]) if urgent else None
    )
    worst_class = max(
        (
            (name, _ratio(obs.ttft_p95_by_class_s.get(name), target))
            for name, target in params.class_targets.items()
        ),
        key=lambda item: item[1] or 0.0,
        default=(None, None),
    )
    breach = ratio > 1.0 or (urgent_ratio is not None and urgent_ratio > 1.0)
    metrics["ttft_ratio"] = ratio
    metrics["urgent_ttft_ratio"] = urgent_ratio

    # ---- learn capacity and forecast load ------------------------------------------------
    rate = obs.request_rate
    rates = tuple((t, r) for t, r in state.rates if now - t <= max(4 * params.interval_s, params.warmup_s))
    capacity = state.capacity_rps if state.capacity_rps is not None else params.initial_capacity_rps
    serving = obs.ready_replicas if obs.ready_replicas is not None else fleet.ready_replicas
    if rate is not None:
        rates = (*rates, (now, rate))
        if serving > 0:
            per_replica = rate / serving
            queueing = (obs.queue_time_s or 0.0) > 0.5 * (obs.compute_time_s or 0.0)
            if ratio > 1.0 and queueing:
                # Over capacity now: a replica sustains less than this load.
                capacity = min(capacity or per_replica, per_replica * 0.95)
            elif ratio < params.scale_down_band and (capacity is None or per_replica > capacity):
                # Comfortably served at this load: it sustains at least this much.
                capacity = per_replica
    metrics["capacity_rps_per_replica"] = capacity

    forecast = None
    needed_by_load = None
    if rate is not None:
        recent_peak = max(r for _, r in rates)
        slope = max(0.0, _trend_rps_per_s(rates))
        forecast = max(rate, recent_peak, rate + slope * params.warmup_s)
        if capacity:
            needed_by_load = math.ceil(forecast / (capacity * params.target_utilization))
    metrics["forecast_rps"] = forecast
    metrics["replicas_needed_by_load"] = None if needed_by_load is None else float(needed_by_load)

    # ---- replicas ------------------------------------------------------------------------
    current = fleet.desired_replicas
    recommendation = current
    reason = ""
    if breach:
        who = f"urgent class {urgent}" if urgent_ratio is not None and urgent_ratio > 1.0 else "overall"
        worst = max(ratio, urgent_ratio or 0.0)
        by_feedback = math.ceil(max(fleet.ready_replicas, 1) * min(2.0, max(1.2, worst)))
        if fleet.warming and needed_by_load is not None and current >= needed_by_load:
            recommendation = current
            reason = (
                f"TTFT p95 {who} at {worst:.2f}x target but {fleet.warming} replica(s) still warming up "
                f"cover the forecast load ({forecast:.2f} req/s): not scaling twice"
            )
        else:
            recommendation = max(current + 1, by_feedback, needed_by_load or 0)
            reason = (
                f"TTFT p95 {who} at {worst:.2f}x target ({obs.ttft_p95_s:.2f}s vs {params.ttft_target_s:g}s)"
            )
    elif needed_by_load is not None and needed_by_load > current:
        recommendation = needed_by_load
        reason = (
            f"forecast load {forecast:.2f} req/s needs {needed_by_load} replicas at "
            f"{params.target_utilization:.0%} of {capacity:.2f} req/s each"
        )
    elif ratio < params.scale_down_band and (urgent_ratio is None or urgent_ratio < params.scale_down_band):
        floor = needed_by_load if needed_by_load is not None else current
        # Step down gradually: at most a quarter of the fleet (at least one replica) per interval.
        recommendation = max(floor, current - max(1, current // 4))
        if recommendation < current:
            reason = f"TTFT p95 at {ratio:.2f}x target leaves slack; load needs {floor}"
    recommendation = _clamp(recommendation, params)

    recommendations = tuple(
        (t, r) for t, r in state.recommendations if now - t < params.scale_down_stabilization_s
    )
    recommendations = (*recommendations, (now, recommendation))
    target = recommendation
    if recommendation < current:
        # Highest recommendation inside the scale-down window wins (HPA's stabilization).
        target = max(r for _, r in recommendations)
        target = min(target, current)
        if target == current:
            reason = (
                f"{reason}; held by the {params.scale_down_stabilization_s:g}s scale-down window"
                if reason
                else ""
            )
    elif recommendation > current and params.scale_up_stabilization_s > 0:
        window = [r for t, r in recommendations if now - t < params.scale_up_stabilization_s]
        target = max(current, min(window))

    new_state = replace(state, recommendations=recommendations, rates=rates, capacity_rps=capacity)
    if target != current:
        action = "scale-up" if target > current else "scale-down"
        new_state = replace(new_state, last_scale_at=now)
        return (
            Decision(
                action, f"{action} {current} -> {target} replicas", reason, replicas=target, metrics=metrics
            ),
            new_state,
        )

    # ---- batching (only with a stable fleet) ---------------------------------------------
    if params.tune_batching and not breach and fleet.warming == 0:
        decision, new_state = _batching_step(params, obs, fleet, new_state, now, ratio, metrics)
        if decision is not None:
            return decision, new_state
    hold_reason = reason or f"TTFT p95 {obs.ttft_p95_s:.2f}s ({ratio:.2f}x target) within band"
    if worst_class[0] is not None and worst_class[1] is not None:
        hold_reason += f"; worst class {worst_class[0]} at {worst_class[1]:.2f}x its target"
    return Decision("hold", f"hold at {current} replicas", hold_reason, metrics=metrics), new_state


def _batching_step(
    params: PolicyParams,
    obs: Observation,
    fleet: FleetState,
    state: PolicyState,
    now: float,
    ratio: float,
    metrics: dict[str, float | None],
) -> tuple[Decision | None, PolicyState]:
    assert obs.ttft_p95_s is not None
    current = fleet.batching
    cooldown = 2 * params.interval_s
    # 1) Judge the last step: revert if TTFT got clearly worse.
    trial = state.trial
    if trial is not None and now - trial.applied_at >= params.interval_s:
        if obs.ttft_p95_s > trial.ttft_before_s * 1.15 and ratio > params.batching_slack_band:
            block_until = now + 10 * params.interval_s
            return (
                Decision(
                    "revert-batching",
                    f"revert batching to {trial.previous.describe()}",
                    f"the {trial.direction} step raised TTFT p95 from {trial.ttft_before_s:.2f}s "
                    f"to {obs.ttft_p95_s:.2f}s",
                    batching=trial.previous,
                    metrics=metrics,
                ),
                replace(state, trial=None, last_batching_at=now, blocked=(trial.direction, block_until)),
            )
        state = replace(state, trial=None)
    if state.last_batching_at is not None and now - state.last_batching_at < cooldown:
        return None, state
    if state.last_scale_at is not None and now - state.last_scale_at < cooldown:
        return None, state

    queue, compute = obs.queue_time_s, obs.compute_time_s
    blocked = state.blocked[0] if state.blocked and now < state.blocked[1] else None
    proposal: BatchingConfig | None = None
    direction = ""
    why = ""
    if queue is not None and compute is not None and queue > compute and ratio > params.batching_slack_band:
        # Queueing dominates TTFT: hold requests less, dispatch smaller batches sooner.
        if current.max_queue_delay_us > params.min_queue_delay_us:
            delay = max(params.min_queue_delay_us, current.max_queue_delay_us // 2)
            proposal, direction = current.with_delay(delay), "narrow"
            why = (
                f"queue time {queue * 1000:.1f} ms exceeds compute {compute * 1000:.1f} ms: "
                "halve the queue delay"
            )
    elif ratio < params.batching_slack_band and blocked != "widen":
        busy = obs.gpu_utilization is None or obs.gpu_utilization >= 0.6
        batch = obs.mean_batch_size
        largest = max(current.preferred_batch_sizes, default=1)
        if busy and current.max_queue_delay_us < params.max_queue_delay_us:
            delay = min(params.max_queue_delay_us, max(500, current.max_queue_delay_us * 2))
            proposal, direction = current.with_delay(delay), "widen"
            why = (
                f"TTFT has slack ({ratio:.2f}x target) and GPUs are busy: "
                "longer queue delay for larger batches"
            )
        elif (
            busy
            and batch is not None
            and batch >= 0.8 * largest
            and largest * 2 <= params.max_preferred_batch_size
        ):
            sizes = tuple(sorted({*current.preferred_batch_sizes, largest * 2}))
            proposal, direction = replace(current, preferred_batch_sizes=sizes), "widen"
            why = f"batches fill the largest preferred size ({batch:.1f} of {largest}): allow {largest * 2}"
    if proposal is None or proposal == current or blocked == direction:
        return None, state
    trial = BatchingTrial(applied_at=now, previous=current, ttft_before_s=obs.ttft_p95_s, direction=direction)
    return (
        Decision(
            "batching",
            f"batching {current.describe()} -> {proposal.describe()}",
            why,
            batching=proposal,
            metrics=metrics,
        ),
        replace(state, trial=trial, last_batching_at=now),
    )
