"""Builders for the control-policy tests: parameters, observations, fleets, a stepped fleet."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from phoenix_operator.control.policy import Decision, FleetState, PolicyParams, PolicyState, decide
from phoenix_operator.observation import Observation
from phoenix_operator.render.tritonconfig import BatchingConfig

CLASSES = {"urgent": 1.5, "standard": 3.0, "bulk": 3.0}
BATCHING = BatchingConfig(preferred_batch_sizes=(4, 8), max_queue_delay_us=2000, instance_count=1)


def make_params(**overrides: Any) -> PolicyParams:
    """A deployment with 1-10 replicas, 10 req/s per replica (request-count mode), 15 s loop."""
    base: dict[str, Any] = {
        "min_replicas": 1,
        "max_replicas": 10,
        "gpus_per_replica": 1,
        "gpu_budget": None,
        "ttft_target_s": 3.0,
        "class_targets": dict(CLASSES),
        "interval_s": 15.0,
        "scale_up_stabilization_s": 0.0,
        "scale_down_stabilization_s": 120.0,
        "tune_batching": True,
        "max_batch_size": 32,
        "min_queue_delay_us": 0,
        "max_queue_delay_us": 20_000,
        "max_preferred_batch_size": 16,
        "min_instance_count": 1,
        "max_instance_count": 2,
        "initial_capacity_rps": 10.0,
    }
    base.update(overrides)
    return PolicyParams(**base)


def make_obs(
    at: float = 15.0,
    *,
    ttft: float | None = 0.3,
    rate: float | None = 30.0,
    pending: float | None = 0.0,
    ready: int | None = 4,
    by_class: Mapping[str, float | None] | None = None,
    queue: float | None = 0.01,
    compute: float | None = 0.05,
    util: float | None = 0.9,
    batch: float | None = 2.0,
    stale: bool = False,
    **extra: Any,
) -> Observation:
    classes = dict(by_class) if by_class is not None else {"urgent": 0.1, "standard": ttft, "bulk": ttft}
    return Observation(
        at=at,
        window_s=15.0,
        ttft_p95_s=ttft,
        ttft_p95_by_class_s=classes if ttft is not None else {},
        queue_time_s=queue,
        compute_time_s=compute,
        request_rate=rate,
        mean_batch_size=batch,
        gpu_utilization=util,
        pending_requests=pending,
        ready_replicas=ready,
        stale=stale,
        stale_reason="newest sample is 300.0s old (limit 75s)" if stale else None,
        missing={} if ttft is not None else {"ttft_p95_s": "no data"},
        **extra,
    )


def make_fleet(desired: int = 4, ready: int | None = None, batching: BatchingConfig = BATCHING) -> FleetState:
    return FleetState(
        desired_replicas=desired, ready_replicas=desired if ready is None else ready, batching=batching
    )


@dataclass
class SteppedFleet:
    """Runs ``decide`` every interval against a fleet that obeys it (pods ready after warm-up)."""

    params: PolicyParams
    desired: int
    batching: BatchingConfig = BATCHING
    state: PolicyState = field(default_factory=PolicyState)
    now: float = 0.0
    #: Times new pods become ready, one entry per pod still warming.
    warming_until: list[float] = field(default_factory=list)
    decisions: list[tuple[float, Decision]] = field(default_factory=list)

    @property
    def ready(self) -> int:
        return self.desired - len(self.warming_until)

    def step(self, **obs: Any) -> Decision:
        self.now += self.params.interval_s
        self.warming_until = [t for t in self.warming_until if t > self.now]
        fleet = FleetState(self.desired, self.ready, self.batching)
        observation = make_obs(self.now, ready=self.ready, **obs)
        decision, self.state = decide(self.params, observation, fleet, self.state, self.now)
        self.decisions.append((self.now, decision))
        if decision.replicas is not None:
            if decision.replicas > self.desired:
                ready_at = self.now + self.params.warmup_s
                self.warming_until += [ready_at] * (decision.replicas - self.desired)
            else:
                # A scale-down removes not-ready pods first (as a ReplicaSet does).
                drop = self.desired - decision.replicas
                self.warming_until = sorted(self.warming_until)[: max(0, len(self.warming_until) - drop)]
            self.desired = decision.replicas
        if decision.batching is not None:
            self.batching = decision.batching
        return decision


def with_state(**changes: Any) -> PolicyState:
    return replace(PolicyState(), **changes)
