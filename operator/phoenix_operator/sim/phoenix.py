"""Phoenix's control loop in the simulator: an adapter around ``control.policy.decide``.

The policy is the operator's own code, not a copy: every tick the adapter turns the simulator's
:class:`FleetView` into the policy's inputs (the same :class:`Observation` type the Prometheus
source produces, a :class:`FleetState`, Triton's batching as :class:`BatchingConfig`), calls
:func:`phoenix_operator.control.policy.decide`, and turns the :class:`Decision` back into a
:class:`FleetCommand`. The policy's parameters come from a :class:`PhoenixDeploymentSpec`
describing the simulated deployment (:func:`simulated_spec` for ``phoenix bench``, the user's
file for ``phoenix plan``), plus a calibration of the profile's cost model in tokens
(:func:`work_model`) — what a load test of the model on its GPU would give an operator.

Registered as ``phoenix`` in the benchmark's registry (``sim.controllers.REGISTRY``, imported
lazily there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from phoenix_operator.api.models import PhoenixDeploymentSpec
from phoenix_operator.control import policy
from phoenix_operator.render.tritonconfig import BatchingConfig
from phoenix_operator.sim.config import BatcherConfig
from phoenix_operator.sim.controllers import BenchContext
from phoenix_operator.sim.cost import BlockingBatchCost, LLMEngineCost
from phoenix_operator.sim.interface import FleetCommand, FleetView
from phoenix_operator.sim.profile import Profile
from phoenix_operator.sim.workloads import AZURE_CONV_TOKENS

#: Placeholder Prometheus URL: the spec needs one for mode auto; the simulator feeds the loop.
SIM_PROMETHEUS = "http://prometheus.simulated:9090"
#: The control-loop period in the simulated deployment (HPA's sync period, for a fair race).
SIM_INTERVAL_S = 15


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


_WORK_MODELS: dict[str, tuple[float, float, float]] = {}


def _fit_work_model(cost: LLMEngineCost) -> tuple[float, float, float]:
    rng = np.random.default_rng(0)
    rows: list[tuple[float, float, float]] = []
    targets: list[float] = []
    # Windows of chatbot traffic whose mean prompt and output lengths vary (log-means +-0.7
    # around the Azure conversation fit): what a load test over a range of mixes would measure.
    for _ in range(120):
        dist = replace(
            AZURE_CONV_TOKENS,
            prompt_mu=AZURE_CONV_TOKENS.prompt_mu + rng.uniform(-0.7, 0.7),
            output_mu=AZURE_CONV_TOKENS.output_mu + rng.uniform(-0.7, 0.7),
        )
        prompts, outputs = dist.sample(100, rng)
        clipped = [cost.clip(int(p), int(o)) for p, o in zip(prompts, outputs, strict=True)]
        seconds = [cost.service_time(p, o, float(p) ** 2) for p, o in clipped]
        mean_p = float(np.mean([p for p, _ in clipped]))
        mean_o = float(np.mean([o for _, o in clipped]))
        rows.append((mean_p, mean_o, mean_p * mean_o))
        targets.append(float(np.mean(seconds)))
    coef, *_ = np.linalg.lstsq(np.asarray(rows), np.asarray(targets), rcond=None)
    p, o, kv = (max(0.0, float(c)) for c in coef)
    return p, o, kv


def work_model(cost: LLMEngineCost | BlockingBatchCost) -> dict[str, float]:
    """Policy overrides: a replica's GPU-seconds per prompt token, output token and KV read.

    A least-squares fit of the cost model's per-request GPU time at full load
    (:meth:`LLMEngineCost.service_time`, the figure the static fleets and the oracle are sized
    with) against the mean token counts of varied chatbot windows: work = a·prompt + b·output +
    c·prompt·output (each generated token reads its prompt's KV cache). On the Azure
    conversation trace it estimates 15 s windows' work within 6 % rms (11 % at worst);
    request counts alone are off by 22 % rms. Empty for a blocking model, whose cost does not
    depend on tokens.
    """
    if not isinstance(cost, LLMEngineCost):
        return {}
    key = repr(cost.profile)
    if key not in _WORK_MODELS:
        _WORK_MODELS[key] = _fit_work_model(cost)
    p, o, kv = _WORK_MODELS[key]
    return {"prompt_token_cost_s": p, "output_token_cost_s": o, "kv_token_cost_s": kv}


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


def simulated_spec(ctx: BenchContext) -> PhoenixDeploymentSpec:
    """The PhoenixDeployment ``phoenix bench`` runs Phoenix with.

    Same start as the other autoscalers (``settings.initial_replicas``, the profile's batching),
    the same replica range (GPU budget = maxReplicas × 1 GPU), the benchmark's TTFT target, the
    profile's priority levels as classes, batching bounds from the profile (maxBatchSize never
    changes; queue delay 0-50 ms), the profile's pod start-up as ``replicaStartupSeconds`` (what
    an operator measures once) and as scale-down stabilisation (do not give back a replica that
    could not come back in time).
    """
    b = ctx.profile.batching
    llm = isinstance(ctx.cost, LLMEngineCost)
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
        "autoscaling": {
            "mode": "auto",
            "minReplicas": ctx.settings.min_replicas,
            "maxReplicas": ctx.settings.max_replicas,
            "gpuBudget": ctx.settings.max_replicas,
            "prometheusUrl": SIM_PROMETHEUS,
            "intervalSeconds": SIM_INTERVAL_S,
            "ttftP95TargetSeconds": ctx.slo_ttft_s,
            "scaleDownStabilizationSeconds": math.ceil(ctx.settings.startup_s),
            "replicaStartupSeconds": math.ceil(ctx.settings.startup_s),
            "tuneBatching": True,
        },
    }
    if b.priority_levels:
        data["priority"] = classes_block(ctx.profile, ctx.slo_ttft_s)
    return PhoenixDeploymentSpec.model_validate(data)


def params_for(
    spec: PhoenixDeploymentSpec,
    cost: LLMEngineCost | BlockingBatchCost,
    capacity_rps: float,
) -> policy.PolicyParams:
    """The operator's ``PolicyParams.from_spec`` (warm-up = ``replicaStartupSeconds``) plus what
    a load test of the model would tell: for the LLM engine the token work model; for a blocking
    model (no token dependence) a replica's requests/s at full batches as the capacity prior."""
    overrides: dict[str, Any] = dict(work_model(cost))
    if not overrides.get("output_token_cost_s"):
        overrides["initial_capacity_rps"] = capacity_rps
    return policy.PolicyParams.from_spec(spec, **overrides)


@dataclass
class PhoenixController:
    """Runs ``control.policy.decide`` against the simulator, one call per ``interval_s``."""

    params: policy.PolicyParams
    name: str = "phoenix"
    interval_s: float = float(SIM_INTERVAL_S)
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


def phoenix_controller(ctx: BenchContext) -> PhoenixController:
    """``phoenix bench``'s Phoenix: the simulated deployment's spec, the operator's policy."""
    spec = simulated_spec(ctx)
    params = params_for(spec, ctx.cost, ctx.replica_capacity_rps)
    return PhoenixController(params=params, interval_s=float(spec.autoscaling.interval_seconds))
