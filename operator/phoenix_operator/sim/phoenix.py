"""Phoenix's control loop in the simulator: an adapter around ``control.policy.decide``.

The policy is the operator's own code, not a copy, with parameters from ``PolicyParams.from_spec``
alone, so the simulator scores what the operator would do. Details: docs/benchmark.md, "Phoenix in
the simulator", and docs/simulator.md, "Phoenix in the registry".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from phoenix_operator.api.models import PhoenixDeploymentSpec
from phoenix_operator.control import policy
from phoenix_operator.render.tritonconfig import BatchingConfig
from phoenix_operator.sim.config import BatcherConfig
from phoenix_operator.sim.controllers import BenchContext
from phoenix_operator.sim.cost import LLMEngineCost
from phoenix_operator.sim.interface import FleetCommand, FleetView
from phoenix_operator.sim.profile import Profile

#: Placeholder Prometheus URL: the spec needs one for mode auto; the simulator feeds the loop.
SIM_PROMETHEUS = "http://prometheus.simulated:9090"


def to_batching(config: BatcherConfig) -> BatchingConfig:
    """The simulator's Triton config -> the part the policy may change."""
    return BatchingConfig(
        preferred_batch_sizes=tuple(sorted(config.preferred_batch_sizes)),
        max_queue_delay_us=config.max_queue_delay_us,
        instance_count=config.instance_count,
    )


def from_batching(batching: BatchingConfig, base: BatcherConfig) -> BatcherConfig:
    """The policy's batching applied onto the simulator's full Triton config."""
    return base.with_changes(
        preferred_batch_sizes=tuple(batching.preferred_batch_sizes),
        max_queue_delay_us=batching.max_queue_delay_us,
        instance_count=batching.instance_count,
    )


def classes_block(profile: Profile, slo_ttft_s: float) -> dict[str, Any]:
    """Priority classes of the simulated deployment: the profile's levels; urgent at half the target."""
    ordered = sorted(profile.classes.items(), key=lambda item: item[1])
    default_level = profile.batching.default_priority_level
    default = next((name for name, level in ordered if level == default_level), ordered[0][0])
    return {
        "classes": [
            {"name": name, "level": level, "ttftTargetSeconds": slo_ttft_s / 2 if i == 0 else slo_ttft_s}
            for i, (name, level) in enumerate(ordered)
        ],
        "defaultClass": default,
    }


#: Load-test results by workload and engine: replications of one bench share nothing, but a
#: policy run twice on one context (tuning, then scoring) calibrates once.
_CALIBRATIONS: dict[tuple[Any, ...], dict[str, float]] = {}


def calibrated_capacity(ctx: BenchContext) -> dict[str, float]:
    """``replicaCapacity`` as ``phoenix plan --calibrate`` measures it for this deployment: a
    ramped load test of one simulated replica (the profile's engine and batching) with the
    workload's token mix and with each half of it, judged against the benchmark's TTFT target."""
    from phoenix_operator.sim.plan import calibrate_replica, token_mix

    key = (
        ctx.profile.name,
        id(ctx.cost),
        ctx.workload.name,
        len(ctx.workload.arrivals),
        sum(a.prompt_tokens + 7 * a.output_tokens for a in ctx.workload.arrivals),
        ctx.slo_ttft_s,
    )
    if key not in _CALIBRATIONS:
        mix = token_mix(ctx.workload, ctx.cost)
        _CALIBRATIONS[key] = calibrate_replica(
            ctx.cost, ctx.profile.batching, mix, ctx.slo_ttft_s
        ).replica_capacity()
    return _CALIBRATIONS[key]


def simulated_spec(
    ctx: BenchContext,
    interval_s: int | None = None,
    scale_down_stabilization_s: int | None = None,
    replica_capacity: dict[str, float] | None = None,
) -> PhoenixDeploymentSpec:
    """The PhoenixDeployment ``phoenix bench`` runs Phoenix with, as a user would write it.

    What describes the deployment is set: the model and its batching (the profile's; maxBatchSize
    never changes, queue delay 0-50 ms), the replica range (GPU budget = maxReplicas x 1 GPU),
    the benchmark's TTFT target, the profile's priority levels as classes. The control loop's
    own settings are left to the operator's defaults (``intervalSeconds`` 30,
    ``scaleDownStabilizationSeconds`` 300) unless a tuned run passes ``interval_s`` /
    ``scale_down_stabilization_s``; ``replicaStartupSeconds`` is the start-up time every policy
    is told (the benchmark's guess, off by up to ``--startup-error``). ``replica_capacity`` is the
    ``replicaCapacity`` block a user pastes from ``phoenix plan --calibrate`` (None: none).
    """
    b = ctx.profile.batching
    llm = isinstance(ctx.cost, LLMEngineCost)
    autoscaling: dict[str, Any] = {
        "mode": "auto",
        "minReplicas": ctx.settings.min_replicas,
        "maxReplicas": ctx.settings.max_replicas,
        "gpuBudget": ctx.settings.max_replicas,
        "prometheusUrl": SIM_PROMETHEUS,
        "ttftP95TargetSeconds": ctx.slo_ttft_s,
        "tuneBatching": True,
    }
    if interval_s is not None:
        autoscaling["intervalSeconds"] = interval_s
    if scale_down_stabilization_s is not None:
        autoscaling["scaleDownStabilizationSeconds"] = scale_down_stabilization_s
    if replica_capacity is not None:
        autoscaling["replicaCapacity"] = dict(replica_capacity)
    told = ctx.settings.told_startup_s
    if told is not None:
        # The user's guess of the start-up time, as off as every other policy is told it.
        autoscaling["replicaStartupSeconds"] = min(3600, max(0, round(told)))
    data: dict[str, Any] = {
        "model": {
            "name": ctx.profile.name.replace("_", "-"),
            "repository": {"uri": f"s3://models/{ctx.profile.name}"},
            "backend": "tensorrtllm" if llm else "python",
            "maxBatchSize": b.max_batch_size,
            "instanceCount": b.instance_count,
        },
        "triton": {"gpusPerReplica": 1, "replicas": ctx.settings.initial_replicas},
        "batching": {
            "preferredBatchSizes": sorted(b.preferred_batch_sizes),
            "maxQueueDelayMicroseconds": b.max_queue_delay_us,
            "bounds": {
                "minQueueDelayMicroseconds": 0,
                "maxQueueDelayMicroseconds": max(50_000, b.max_queue_delay_us),
                "maxPreferredBatchSize": b.max_batch_size,
                "minInstanceCount": b.instance_count,
                "maxInstanceCount": b.instance_count if llm else max(b.instance_count, 4),
            },
        },
        "autoscaling": autoscaling,
    }
    if b.priority_levels:
        data["priority"] = classes_block(ctx.profile, ctx.slo_ttft_s)
    return PhoenixDeploymentSpec.model_validate(data)


def params_for(spec: PhoenixDeploymentSpec) -> policy.PolicyParams:
    """The operator's own parameters for a spec: ``PolicyParams.from_spec`` and nothing else,
    exactly as the control loop (``control.loop``) builds them."""
    return policy.PolicyParams.from_spec(spec)


@dataclass
class PhoenixController:
    """Runs ``control.policy.decide`` against the simulator, one call per ``interval_s``."""

    params: policy.PolicyParams
    name: str = "phoenix"
    interval_s: float = 30.0
    #: Replicas at time 0 (``phoenix plan``); None = the benchmark's autoscaler start.
    initial_replicas: int | None = None
    state: policy.PolicyState = field(default_factory=policy.PolicyState)
    #: Every decision, in order (what the operator would write to status and Events).
    decisions: list[tuple[float, policy.Decision]] = field(default_factory=list)

    def decide(self, now: float, view: FleetView) -> FleetCommand:
        fleet = policy.FleetState(
            desired_replicas=view.desired_replicas,
            ready_replicas=view.ready_replicas,
            batching=to_batching(view.batching),
        )
        decision, self.state = policy.decide(self.params, view.observation, fleet, self.state, now)
        self.decisions.append((now, decision))
        batching = None if decision.batching is None else from_batching(decision.batching, view.batching)
        return FleetCommand(decision.replicas, batching, f"{decision.summary}: {decision.reason}")


def phoenix_controller(
    ctx: BenchContext,
    name: str = "phoenix",
    interval_s: int | None = None,
    scale_down_stabilization_s: int | None = None,
    calibrated: bool = True,
) -> PhoenixController:
    """``phoenix bench``'s Phoenix: the simulated deployment's spec, the operator's policy;
    ``calibrated``: with the ``replicaCapacity`` the README's ``phoenix plan --calibrate`` gives."""
    capacity = calibrated_capacity(ctx) if calibrated else None
    spec = simulated_spec(ctx, interval_s, scale_down_stabilization_s, capacity)
    return PhoenixController(
        params=params_for(spec), name=name, interval_s=float(spec.autoscaling.interval_seconds)
    )
