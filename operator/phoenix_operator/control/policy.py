"""Phoenix's control policy: replicas and Triton batching from one Observation (pure, no I/O).

State (:class:`PolicyState`) and the clock are arguments, so the same code runs in the operator,
the simulator and property tests. :func:`decide` runs one step as small named rules; every Decision
names its rule and the numbers it used. Why it decides as it does:
docs/operator.md#how-the-policy-decides-controlpolicypy; the rules: docs/operator.md#the-policys-rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

from phoenix_operator.api.models import Backend, PhoenixDeploymentSpec
from phoenix_operator.observation import Observation
from phoenix_operator.render.tritonconfig import BatchingConfig

#: Backends whose engine batches in flight behind Triton (queue delay only adds latency there).
INFLIGHT_BACKENDS = frozenset({Backend.VLLM.value, Backend.TENSORRTLLM.value})


@dataclass(frozen=True)
class PolicyParams:
    """The knobs and bounds of one deployment, read from its spec (plus optional calibration)."""

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
    #: The backend batches in flight itself (vLLM, TensorRT-LLM): never widen Triton's batching.
    inflight_batching: bool = False
    #: Expected time from scale-up to a serving replica (image pull + model load):
    #: ``spec.autoscaling.replicaStartupSeconds``, the horizon the load is forecast over.
    warmup_s: float = 120.0
    #: Fraction of learned capacity the fleet is sized for (headroom for bursts): scale down
    #: only while the smaller fleet stays below it; scale up past it once the queue or TTFT
    #: confirms the load. 1.0 where a load test measured capacity and saturation
    #: (:func:`_measured_band`).
    target_utilization: float = 0.9
    #: Scale up on the minute level or the newest window alone (no queue growth, TTFT with
    #: slack) only past this: below capacity the queue does not grow.
    max_utilization: float = 1.0
    #: Scale down only while TTFT p95 is below this fraction of target in every class.
    scale_down_band: float = 0.6
    #: Widen batching only while TTFT p95 is below this fraction of target.
    batching_slack_band: float = 0.5
    #: Seconds of load history averaged into the level that scale-down is judged on (scale-up
    #: reacts to the newest window: fast up, slow down).
    smoothing_s: float = 60.0
    #: Share of the load trend (Theil-Sen over ``trend_window_s``) extrapolated over the warm-up.
    trend_weight: float = 1.0
    #: History the trend is fitted on (needs three quarters of it before any trend is used).
    trend_window_s: float = 240.0
    #: Confidence (one-sided) that the load is rising before its trend is extrapolated; 0 =
    #: extrapolate any positive median slope (noise on a flat load included).
    trend_confidence: float = 0.9
    #: Seconds of load the *sustained* level averages: it is planned at ``target_utilization``,
    #: while the minute level and the newest window may reach ``max_utilization`` before they
    #: order a replica unless the queue or TTFT confirms them (a minute near capacity only
    #: builds a queue the TTFT budget absorbs; a sustained load that high does not).
    sustained_s: float = 240.0
    #: The load is *climbing* while the newest half of this window's loads is above
    #: ``climb_ratio`` x the older half: no scale-down then, and only then is the trend
    #: extrapolated (a plateau's swings are shorter than this window). 0 = never climbing.
    climb_window_s: float = 600.0
    climb_ratio: float = 1.05
    #: An unconfirmed newest window orders replicas only as a surprise: more than this many
    #: standard deviations above the sustained window's loads (a step, not the load's usual
    #: 15 s noise). 0 = always.
    newest_z: float = 2.0
    #: A scale-up within this long of a scale-down doubles the scale-down window (bursty load).
    regret_s: float = 300.0
    #: Longest the adaptive scale-down window grows to.
    max_scale_down_window_s: float = 600.0
    #: Weight of this window's token means against the running means (1 = this window only).
    token_mean_weight: float = 1.0
    #: Share of the way capacity moves towards one interval's evidence.
    capacity_learning_rate: float = 0.25
    #: A backlog is planned to drain within this long once the replicas ordered for it serve
    #: (seconds). Fixed, not the warm-up: the slower the pods, the longer the queue grows before
    #: they come, and draining it over as long again keeps requests missing the SLO for minutes
    #: after the fleet is big enough.
    drain_s: float = 60.0
    #: Work model: a replica's GPU-seconds at full load per request, per prompt token
    #: (prefill), per output token (a decode step's share) and per output token per prompt
    #: token (each generated token reads its context's KV cache). Without it, load is counted in
    #: requests and capacity in requests/s.
    request_cost_s: float = 0.0
    prompt_token_cost_s: float = 0.0
    output_token_cost_s: float = 0.0
    kv_token_cost_s: float = 0.0
    #: Prior for a replica's capacity in requests/s (request-count mode) until the fleet has
    #: taught the policy better; in work mode the prior is one replica's worth of work.
    #: ``spec.autoscaling.replicaCapacity.requestsPerSecond`` (a load test's figure).
    initial_capacity_rps: float | None = None
    #: Mean prompt / generated tokens per request the capacity was measured at: with them (and
    #: token means in the metrics) load is counted in requests *of that mix*, so a live mix of
    #: longer requests weighs more (``prompt_token_weight``).
    capacity_prompt_tokens: float | None = None
    capacity_output_tokens: float | None = None
    #: A prompt token's cost relative to a generated one when rescaling a measured capacity to
    #: the live mix: prefill runs a prompt's tokens in one pass, decode takes a step per token.
    #: ``replicaCapacity.promptTokenWeight`` where a load test measured it.
    prompt_token_weight: float = 0.2
    #: Probing for headroom: while TTFT has deep slack and the capacity estimate holds the fleet,
    #: raise the estimate to what releases a third of it (one replica at least; the others then
    #: prove it, or a growing queue refutes it and caps later probes below that load). False =
    #: learn only from load served.
    capacity_probing: bool = True
    #: Probe only while TTFT p95 is below this fraction of target in every class.
    capacity_probe_band: float = 0.35
    #: Share of the TTFT target retrieval (embed + search at the gateway) may take at p95
    #: (``spec.gateway.retrievalTtftShare``); None = no gateway, so no retrieval in the TTFT.
    retrieval_ttft_share: float | None = None

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

    @property
    def has_work_model(self) -> bool:
        return self.prompt_token_cost_s > 0 or self.output_token_cost_s > 0 or self.kv_token_cost_s > 0

    @property
    def has_capacity_mix(self) -> bool:
        return bool(self.initial_capacity_rps and self.capacity_prompt_tokens and self.capacity_output_tokens)

    def requests_at_capacity_mix(self, prompt_tokens: float, output_tokens: float) -> float:
        """How many requests of the measured mix one request of this mix weighs (0.25-4)."""
        assert self.capacity_prompt_tokens is not None and self.capacity_output_tokens is not None
        measured = self.capacity_output_tokens + self.prompt_token_weight * self.capacity_prompt_tokens
        live = output_tokens + self.prompt_token_weight * prompt_tokens
        return min(4.0, max(0.25, live / measured))

    def work_per_request(self, prompt_tokens: float, output_tokens: float) -> float:
        """Replica-seconds one request with these mean token counts costs (work model)."""
        return max(
            1e-6,
            self.request_cost_s
            + self.prompt_token_cost_s * prompt_tokens
            + self.output_token_cost_s * output_tokens
            + self.kv_token_cost_s * prompt_tokens * output_tokens,
        )

    @classmethod
    def from_spec(cls, spec: PhoenixDeploymentSpec, **overrides: float | int | bool | None) -> PolicyParams:
        auto, bounds = spec.autoscaling, spec.batching.bounds
        measured = auto.replica_capacity
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
            inflight_batching=str(spec.model.backend) in INFLIGHT_BACKENDS,
            warmup_s=float(auto.replica_startup_seconds),
            retrieval_ttft_share=spec.gateway.retrieval_ttft_share if spec.gateway.enabled else None,
            initial_capacity_rps=measured.requests_per_second if measured else None,
            capacity_prompt_tokens=measured.prompt_tokens if measured else None,
            capacity_output_tokens=measured.output_tokens if measured else None,
        )
        if measured is not None and measured.prompt_token_weight is not None:
            params = replace(params, prompt_token_weight=measured.prompt_token_weight)
        saturation = measured.saturation_requests_per_second if measured else None
        if measured is not None and saturation is not None:
            target, most = _measured_band(measured.requests_per_second, saturation)
            params = replace(params, target_utilization=target, max_utilization=most)
        return replace(params, **overrides)  # type: ignore[arg-type]


#: Widest hysteresis band a load test may set: saturation past 1.5x the rate within the target
#: is a replica whose TTFT breaks long before its throughput does, where a minute that far above
#: capacity would wait far beyond the target.
MAX_MEASURED_BAND = 1.5


def _measured_band(capacity_rps: float, saturation_rps: float) -> tuple[float, float]:
    """Utilisation targets from a load test that measured both ends of a replica's cliff.

    Returns (target, max) utilisation. The capacity was measured at the TTFT target under Poisson
    arrivals, so the bursts a sustained load brings are already in it: the sustained level is
    planned at 100 % of it. Up to saturation the queue does not grow, so a minute or a window
    between the two orders a replica only once the queue or TTFT confirms it. Without the
    saturation figure the band is the defaults' (sustained at 90 %, unconfirmed at 100 %): a
    guess at where the cliff is.
    """
    return 1.0, min(MAX_MEASURED_BAND, max(1.0, saturation_rps / capacity_rps))


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
    #: (time, load) history (work units/s) for the level and the trend.
    loads: tuple[tuple[float, float], ...] = ()
    #: Learned sustainable load per replica (work units/s); None = not known yet.
    capacity: float | None = None
    #: Running means of the token counts (work mode), so a window without data keeps the last.
    mean_prompt_tokens: float | None = None
    mean_output_tokens: float | None = None
    #: Lowest load per replica at which the queue was seen growing: probes stay below it.
    refuted: float | None = None
    #: Requests waiting at the previous decision (queue growth = overload).
    pending: float | None = None
    #: When ``pending`` was read (its change over the time since is the queue's growth rate).
    pending_at: float | None = None
    #: Replicas serving at the previous decision: a window teaches capacity only when the same
    #: number served all of it (one that came up at its end did not carry its load).
    serving: int | None = None
    last_scale_at: float | None = None
    last_scale_down_at: float | None = None
    #: When the oldest scale-up still warming was ordered (None = nothing warming).
    warming_since: float | None = None
    #: Scale-down window grown after premature scale-downs (None = the spec's).
    scale_down_window_s: float | None = None
    last_regret_at: float | None = None
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
    #: The rule that decided: fail-static, breach, feed-forward, scale-down, stabilisation (the
    #: windows or bounds changed what a rule asked for), batching, or hold (no rule applied).
    rule: str = ""

    @property
    def changes_something(self) -> bool:
        return self.replicas is not None or self.batching is not None


@dataclass(frozen=True)
class RetrievalCheck:
    """Retrieval's p95 against its share of the TTFT target (``RetrievalSlow`` in status)."""

    #: True: over its share; False: within; None: unknown (no figure, or no gateway).
    slow: bool | None
    #: Retrieval p95 beyond its allowance (share x target), seconds; 0 when within or unknown.
    #: This much of a client-side TTFT is retrieval's doing, which no Triton replica can remove.
    excess_s: float
    reason: str
    message: str


def check_retrieval(
    retrieval_p95_s: float | None,
    ttft_target_s: float,
    share: float | None,
    stage_p95_s: Mapping[str, float] | None = None,
    missing_reason: str | None = None,
) -> RetrievalCheck:
    """Judge retrieval's p95 (embed + search) against ``share`` x the TTFT target.

    The slowest retrieval stage (``embed`` or ``search``) is named when the gateway's stage
    histogram has it, so the message says where to look.
    """
    if share is None:
        return RetrievalCheck(None, 0.0, "NoGateway", "the gateway is disabled: no retrieval in the TTFT")
    limit_pct = f"{share * 100:.0f} %"
    if retrieval_p95_s is None:
        why = missing_reason or "no retrieval figure"
        return RetrievalCheck(None, 0.0, "NoRetrievalData", f"retrieval p95 unknown ({why})")
    allowance = share * ttft_target_s
    pct = 100.0 * retrieval_p95_s / ttft_target_s
    message = (
        f"retrieval p95 {retrieval_p95_s:.2f} s is {pct:.0f} % of the {ttft_target_s:g} s TTFT target "
        f"(limit {limit_pct})"
    )
    stages = {k: v for k, v in (stage_p95_s or {}).items() if k in RETRIEVAL_STAGES}
    if stages:
        slowest = max(stages, key=lambda k: stages[k])
        message += "; " + ", ".join(
            f"{k} p95 {stages[k]:.2f} s" for k in sorted(stages, key=lambda k: -stages[k])
        )
        if retrieval_p95_s > allowance:
            message += f": the {slowest} stage is the slow one"
    if retrieval_p95_s > allowance:
        return RetrievalCheck(True, retrieval_p95_s - allowance, "RetrievalOverShare", message)
    return RetrievalCheck(False, 0.0, "RetrievalWithinShare", message)


#: The gateway stages that make up retrieval (``phoenix_gateway_stage_seconds{stage}``).
RETRIEVAL_STAGES = ("embed", "search")


def _ratio(value: float | None, target: float) -> float | None:
    return None if value is None else value / target


#: One-sided standard normal quantiles for the trend's confidence (``trend_confidence``).
_Z_ONE_SIDED = ((0.8, 0.8416), (0.9, 1.2816), (0.95, 1.6449), (0.975, 1.96), (0.99, 2.3263))


def _robust_slope(points: tuple[tuple[float, float], ...]) -> float:
    """Theil-Sen slope (median of pairwise slopes): one odd sample, or a start-up ramp at the
    edge of the history, does not tilt it the way it tilts a least-squares fit."""
    return _rising_slope(points, confidence=0.0)


def _rising_slope(points: tuple[tuple[float, float], ...], confidence: float) -> float:
    """The Theil-Sen slope when the load is rising with ``confidence`` (one-sided), else 0.

    Rising means the lower bound of Sen's confidence interval (a rank of the sorted pairwise
    slopes, from Kendall's S variance n(n-1)(2n+5)/18) is above zero. On a flat but noisy load
    the median slope is positive half the time: extrapolated over the warm-up, that noise alone
    would order replicas. ``confidence`` 0 returns the median slope as it is.
    """
    slopes = sorted(
        (v2 - v1) / (t2 - t1) for i, (t1, v1) in enumerate(points) for t2, v2 in points[i + 1 :] if t2 > t1
    )
    if not slopes:
        return 0.0
    mid = len(slopes) // 2
    median = slopes[mid] if len(slopes) % 2 else 0.5 * (slopes[mid - 1] + slopes[mid])
    if confidence <= 0:
        return median
    n = len(points)
    z = next((q for c, q in _Z_ONE_SIDED if confidence <= c + 1e-9), _Z_ONE_SIDED[-1][1])
    reach = z * math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    lower = math.floor((len(slopes) - reach) / 2.0)  # 1-based rank of the lower bound
    if lower < 1 or slopes[lower - 1] <= 0:
        return 0.0
    return median


def _clamp(value: int, params: PolicyParams) -> int:
    return max(params.min_replicas, min(params.replica_cap, value))


def _blend(old: float | None, new: float | None, weight: float) -> float | None:
    if new is None:
        return old
    if old is None:
        return new
    return old + weight * (new - old)


@dataclass(frozen=True)
class _Load:
    """This interval's load picture (in ``unit``: replicas of work, or req/s)."""

    unit: str
    work_per_request: float | None
    #: This window's load.
    now: float | None
    #: Mean load over ``smoothing_s``.
    level: float | None
    #: Growth expected over the warm-up (robust trend x weight x horizon).
    trend: float
    #: Load equivalent of draining the queue (and what piles up until ordered replicas serve).
    backlog: float
    #: This window's load + trend + backlog.
    forecast_up: float | None
    capacity: float | None
    #: Replicas the load needs: the larger of the smoothed level at target utilisation and the
    #: newest window at ``up_utilization``.
    needed_up: int | None
    #: Requests waiting grew noticeably since the last decision (None = unknown).
    queue_growing: bool | None
    #: Requests waiting fell noticeably since the last decision (a backlog draining).
    queue_shrinking: bool

    #: Utilisation the newest window is planned at (target once the queue or TTFT confirms it).
    up_utilization: float = 1.0
    #: Mean load over ``sustained_s`` (planned at target utilisation).
    sustained: float | None = None
    #: The load is still climbing over ``climb_window_s`` (no scale-down).
    climbing: bool = False
    #: How this interval moved the capacity estimate, and on what evidence ("" = not moved).
    learned: str = ""

    def describe(self, params: PolicyParams) -> str:
        """The numbers behind ``needed_up``, for a Decision's reason."""
        if self.forecast_up is None or not self.capacity or self.needed_up is None:
            return "load model not ready (no request rate or capacity yet)"
        confirmed = self.up_utilization == params.target_utilization
        learned = f" ({self.learned})" if self.learned else ""
        return (
            f"load {self.now or 0.0:.2f} {self.unit} now, {self.level or 0.0:.2f} over "
            f"{params.smoothing_s:g}s, {self.sustained or 0.0:.2f} over {params.sustained_s:g}s, "
            f"+{self.trend:.2f} trend{' (climbing)' if self.climbing else ''}, +{self.backlog:.2f} backlog; "
            f"a replica takes {self.capacity:.2f}{learned}, planned at {params.target_utilization:.0%} "
            f"(minute and newest window at {self.up_utilization:.0%}"
            f"{', confirmed by queue/TTFT' if confirmed else ''}): needs {self.needed_up}"
        )


def _load(
    params: PolicyParams, obs: Observation, fleet: FleetState, state: PolicyState, now: float
) -> tuple[_Load, PolicyState]:
    """Measure load, learn capacity, forecast over the warm-up, size the fleet."""
    assert obs.ttft_p95_s is not None or obs.idle
    # Token means of this window (the mix moves within a minute); a window without data keeps
    # the last known means.
    prompt = _blend(state.mean_prompt_tokens, obs.mean_prompt_tokens, params.token_mean_weight)
    output = _blend(state.mean_output_tokens, obs.mean_output_tokens, params.token_mean_weight)
    if params.has_work_model and prompt is not None and output is not None:
        unit = "replicas of work"
        per_request = params.work_per_request(prompt, output)
        prior: float | None = 1.0
    elif params.has_capacity_mix:
        # Requests weighed against the mix the capacity was load-tested at.
        unit = "req/s at the measured mix"
        per_request = (
            1.0 if prompt is None or output is None else params.requests_at_capacity_mix(prompt, output)
        )
        prior = params.initial_capacity_rps
    else:
        unit = "req/s"
        per_request = 1.0
        prior = params.initial_capacity_rps
    rate = obs.request_rate
    pending = obs.pending_requests
    served = None if rate is None else rate * per_request
    # Requests arrive at the rate they complete plus the rate the queue grows: under overload
    # completions are capped at what the fleet serves, and the rest of the load is the queue's
    # growth. Capacity is learned from what was served; the load is what arrived.
    arrived = rate
    before, before_at = state.pending, state.pending_at
    if (
        rate is not None
        and pending is not None
        and before is not None
        and before_at is not None
        and now > before_at
    ):
        arrived = max(0.0, rate + (pending - before) / (now - before_at))
    load = None if arrived is None else arrived * per_request
    horizon = params.warmup_s + params.interval_s
    keep = max(
        horizon,
        params.smoothing_s,
        params.trend_window_s,
        params.sustained_s,
        params.climb_window_s,
        4 * params.interval_s,
    )
    loads = tuple((t, v) for t, v in state.loads if now - t < keep)
    if load is not None:
        loads = (*loads, (now, load))

    # Learn capacity from this interval (only with a fleet that served the whole window: none
    # warming, the same number ready as at the last decision).
    capacity = state.capacity if state.capacity is not None else prior
    serving = obs.ready_replicas if obs.ready_replicas is not None else fleet.ready_replicas
    growing: bool | None = None
    shrinking = False
    if pending is not None and state.pending is not None:
        noise = max(2.0 * serving, 0.05 * (rate or 0.0) * obs.window_s)
        growing = pending - state.pending > noise
        shrinking = state.pending - pending > noise
    ratio = (obs.ttft_p95_s or 0.0) / params.ttft_target_s
    # An idle window proves nothing about capacity (no load was served).
    learned = ""
    refuted = state.refuted
    climbing = _climbing(loads, now, params)
    if served and serving > 0 and fleet.warming == 0 and state.serving in (None, serving):
        # Evidence moves capacity part of the way (one window's load estimate is noisy); without
        # a prior, the first evidence is taken as it is.
        per_replica = served / serving
        step = params.capacity_learning_rate
        if growing and ratio > params.scale_down_band and (capacity is None or per_replica < capacity):
            # The queue grows at this load: a replica sustains less than it.
            capacity = per_replica if capacity is None else capacity + step * (per_replica - capacity)
            refuted = per_replica if refuted is None else min(refuted, per_replica)
            learned = f"lowered: the queue grows at {per_replica:.2f} per replica"
        elif ratio < params.scale_down_band and not growing:
            # Served with slack at this load: a replica sustains at least this much. Without a
            # prior, that proven load is planned at target utilisation (so it alone never orders
            # a replica); with one, the estimate moves towards it. Only the minute's level counts
            # as proof: TTFT trails a burst, so one window above capacity with slack proves
            # nothing yet.
            minute = [v for t, v in loads if now - t < max(params.smoothing_s, params.interval_s)]
            per_replica = min(per_replica, sum(minute) / len(minute) / serving)
            proven = per_replica if prior is not None else per_replica / params.target_utilization
            if capacity is None or proven > capacity:
                capacity = (
                    proven if capacity is None or prior is None else capacity + step * (proven - capacity)
                )
                learned = f"raised: {per_replica:.2f} per replica served with TTFT slack"
            # The estimate that would let a third of the fleet fewer (one at least) carry this load;
            # never a probe that raises a replica's load by more than half (2 -> 1 doubles it).
            fewer = serving - max(1, serving // 3)
            release = (
                per_replica * serving / (fewer * params.target_utilization)
                if fewer >= 1 and serving <= 1.5 * fewer
                else None
            )
            if release is not None and state.refuted is not None:
                release = min(release, 0.95 * state.refuted)
            if (
                capacity is not None
                and release is not None
                and params.capacity_probing
                and serving > params.min_replicas
                and (prior is None or capacity < prior)
                and not climbing
                and _deep_slack(params, obs, ratio)
                and (pending or 0.0) <= serving
                and capacity < release
            ):
                # The estimate is what holds this fleet, and the fleet serves with deep slack and
                # no queue: a replica may well take more. Probe: the estimate that releases a third
                # of the fleet; the others then prove it, or a growing queue pulls it back.
                capacity = release
                learned = (
                    f"probed up to {capacity:.2f}: {per_replica:.2f} per replica with "
                    f"TTFT p95 at {ratio:.2f}x target and no queue"
                )
    if capacity is not None and prior is not None:
        capacity = min(1.5 * prior, max(0.67 * prior, capacity))

    level = trend = sustained = None
    backlog = 0.0
    forecast_up = None
    needed_up = None
    up_util = params.target_utilization
    if load is not None:  # no request rate this window: no sizing (feedback still acts)
        recent = [v for t, v in loads if now - t < max(params.smoothing_s, params.interval_s)]
        level = sum(recent) / len(recent)
        long = [v for t, v in loads if now - t < max(params.sustained_s, params.interval_s)]
        sustained = sum(long) / len(long)
        history = tuple((t, v) for t, v in loads if now - t < params.trend_window_s)
        # A trend needs a long history: a few points after a start or a step are noise, and
        # extrapolating them over minutes orders replicas for nothing.
        slope = 0.0
        # Extrapolated only while the load climbs over the longer window too: a plateau's
        # swings rise for minutes, and carrying them over the warm-up orders replicas the
        # plateau never needs.
        if history[-1][0] - history[0][0] >= 0.75 * params.trend_window_s and climbing:
            slope = max(0.0, _rising_slope(history, params.trend_confidence))
        trend = params.trend_weight * slope * horizon
        latest = loads[-1][1]
        if capacity:
            # Hysteresis: an unconfirmed rise (queue not growing, TTFT with slack) must pass
            # max_utilization in the minute level or the newest window before it orders a
            # replica; the sustained level plans at target (headroom for what the warm-up hides).
            confirmed = bool(growing) or ratio >= params.scale_down_band
            up_util = params.target_utilization if confirmed else params.max_utilization
            # Once the overload is confirmed, work queued now must drain on top of the arrivals,
            # and so must what piles up until replicas ordered now can serve. A queue that
            # stands still while TTFT has slack is the engine's normal waiting line, not a
            # backlog.
            if confirmed:
                excess = max(0.0, level - capacity * serving)
                if fleet.warming and state.warming_since is not None:
                    # Until the first replicas ordered come up (not the latest order: re-planning
                    # from a later order would pile up orders every interval).
                    overload_s = max(0.0, params.warmup_s - (now - state.warming_since))
                else:
                    overload_s = params.warmup_s
                backlog = ((pending or 0.0) * per_request + excess * overload_s) / params.drain_s
            # The newest window is the state now, not a level: the trend is in the others.
            forecast_up = latest + backlog
            sizes = [
                _replicas_for(sustained + trend + backlog, capacity, params.target_utilization),
                _replicas_for(level + trend + backlog, capacity, up_util),
            ]
            # A capacity learned only from slack is a lower bound: on a short history it cannot
            # call the newest window a step past what a replica sustains.
            bounded = prior is not None or refuted is not None
            if confirmed or _surprise(loads, now, latest, params, short_history=bounded):
                sizes.append(_replicas_for(forecast_up, capacity, up_util))
            needed_up = max(sizes)
        elif sustained == 0 and not pending:
            # Nothing arrived for the whole sustained window: no capacity figure is needed to
            # know that the smallest fleet carries it.
            needed_up = 0
    new_state = replace(
        state,
        loads=loads,
        capacity=capacity,
        mean_prompt_tokens=prompt,
        mean_output_tokens=output,
        pending=pending,
        pending_at=now if pending is not None else state.pending_at,
        serving=serving,
        refuted=refuted,
    )
    picture = _Load(
        unit=unit,
        work_per_request=per_request if unit == "replicas of work" else None,
        now=load,
        level=level,
        trend=trend or 0.0,
        backlog=backlog,
        forecast_up=forecast_up,
        capacity=capacity,
        needed_up=needed_up,
        queue_growing=growing,
        queue_shrinking=shrinking,
        up_utilization=up_util,
        sustained=sustained,
        climbing=climbing and load is not None,
        learned=learned,
    )
    return picture, new_state


def _deep_slack(params: PolicyParams, obs: Observation, ratio: float) -> bool:
    """TTFT p95 below ``capacity_probe_band`` x target overall and in every class reported."""
    band = params.capacity_probe_band
    classes = (
        value / target
        for name, target in params.class_targets.items()
        if (value := obs.ttft_p95_by_class_s.get(name)) is not None
    )
    return ratio < band and all(r < band for r in classes)


#: More replicas than any fleet has: what a load needs when the capacity learned is ~0.
_UNBOUNDED_REPLICAS = 1_000_000


def _replicas_for(load: float, capacity: float, utilization: float) -> int:
    needed = load / max(capacity * utilization, 1e-300)
    if not math.isfinite(needed) or needed > _UNBOUNDED_REPLICAS:
        return _UNBOUNDED_REPLICAS
    return math.ceil(needed - 1e-9)


def _surprise(
    loads: tuple[tuple[float, float], ...],
    now: float,
    latest: float,
    params: PolicyParams,
    short_history: bool = True,
) -> bool:
    """Whether the newest window stands out of the sustained window's loads by more than
    ``newest_z`` standard deviations: a step worth acting on before the queue confirms it, not
    the load's usual burstiness (which the queue absorbs). With too little history to call
    anything usual, the answer is ``short_history``: True where the capacity it is weighed
    against is known (a prior, or a load the queue refuted); False where it was learned from
    that same short history's slack (a start-up's rising rate window would read as a step)."""
    if params.newest_z <= 0:
        return True
    before = [v for t, v in loads if now - t < max(params.sustained_s, params.interval_s)][:-1]
    if len(before) < 4:
        return short_history
    mean = sum(before) / len(before)
    sd = math.sqrt(sum((v - mean) ** 2 for v in before) / (len(before) - 1))
    return latest > mean + params.newest_z * sd


def _climbing(loads: tuple[tuple[float, float], ...], now: float, params: PolicyParams) -> bool:
    """Whether the newest half of the last ``climb_window_s`` (or of the history, once it spans
    the trend window) carried clearly more load than the older half, and the load still rises
    over the trend window (Sen's lower bound above zero): a plateau reached after a climb is a
    plateau, even while the older half still remembers the climb."""
    if not params.climb_window_s or not loads:
        return False
    span = min(params.climb_window_s, now - loads[0][0] + params.interval_s)
    if span < 0.75 * params.trend_window_s:
        return False
    half = now - span / 2
    newer = [v for t, v in loads if t > half]
    older = [v for t, v in loads if now - span < t <= half]
    if not newer or not older:
        return False
    if sum(newer) / len(newer) <= params.climb_ratio * (sum(older) / len(older)):
        return False
    recent = tuple((t, v) for t, v in loads if now - t < params.trend_window_s)
    return _rising_slope(recent, params.trend_confidence) > 0


def _scale_down_window(params: PolicyParams, state: PolicyState) -> float:
    return state.scale_down_window_s or params.scale_down_stabilization_s


@dataclass(frozen=True)
class StepContext:
    """One step's inputs and the figures its rules share.

    Each derived figure is computed on first use and then kept, so every rule reads the same
    number, and fail-static never runs the load model on metrics it cannot trust.
    """

    params: PolicyParams
    obs: Observation
    fleet: FleetState
    state: PolicyState
    now: float

    @property
    def current(self) -> int:
        """Replicas ordered now (the fleet's desired size)."""
        return self.fleet.desired_replicas

    @property
    def idle(self) -> bool:
        """Fresh metrics that saw no request (zero load, not missing data)."""
        return self.obs.idle

    @cached_property
    def base_metrics(self) -> Mapping[str, float | None]:
        """The observed figures every decision quotes, fail-static's included."""
        obs = self.obs
        return {
            "ttft_p95_s": obs.ttft_p95_s,
            "target_s": self.params.ttft_target_s,
            "request_rate": obs.request_rate,
            "queue_time_s": obs.queue_time_s,
            "compute_time_s": obs.compute_time_s,
            "mean_batch_size": obs.mean_batch_size,
            "gpu_utilization": obs.gpu_utilization,
            "pending_requests": obs.pending_requests,
            "ready_replicas": float(self.fleet.ready_replicas),
            "desired_replicas": float(self.fleet.desired_replicas),
        }

    @cached_property
    def ttft(self) -> float:
        """TTFT p95 overall; 0 when idle (no request waited)."""
        return self.obs.ttft_p95_s if self.obs.ttft_p95_s is not None else 0.0

    @cached_property
    def ratio(self) -> float:
        """TTFT p95 over its target (above 1: a breach)."""
        return self.ttft / self.params.ttft_target_s

    @cached_property
    def retrieval(self) -> RetrievalCheck:
        """Retrieval's p95 against its share of the TTFT target."""
        return check_retrieval(
            self.obs.retrieval_p95_s, self.params.ttft_target_s, self.params.retrieval_ttft_share
        )

    @cached_property
    def class_ttft(self) -> Mapping[str, float]:
        """TTFT p95 of each class with a target and a figure, most urgent first (gateway-side)."""
        return {
            name: value
            for name in self.params.class_targets
            if (value := self.obs.ttft_p95_by_class_s.get(name)) is not None
        }

    @cached_property
    def class_ratios(self) -> Mapping[str, float]:
        """Class TTFT over target, less retrieval's excess: more Triton replicas cannot remove it."""
        excess, targets = self.retrieval.excess_s, self.params.class_targets
        return {name: max(0.0, value - excess) / targets[name] for name, value in self.class_ttft.items()}

    @cached_property
    def explained(self) -> tuple[str, ...]:
        """Classes over target only by retrieval's excess (not a reason to scale Triton)."""
        targets = self.params.class_targets
        return tuple(
            name
            for name, value in self.class_ttft.items()
            if value / targets[name] > 1.0 and self.class_ratios[name] <= 1.0
        )

    @cached_property
    def urgent_ratio(self) -> float | None:
        """The most urgent class's TTFT over its target (None: no such class or no figure)."""
        urgent = self.params.urgent_class
        return self.class_ratios.get(urgent) if urgent else None

    @cached_property
    def worst_class(self) -> tuple[str, float] | None:
        """The class furthest over (or least under) its target."""
        return max(self.class_ratios.items(), key=lambda item: item[1], default=None)

    @cached_property
    def urgent_breach(self) -> bool:
        """The most urgent class is over its target."""
        return self.urgent_ratio is not None and self.urgent_ratio > 1.0

    @cached_property
    def breach_who(self) -> str | None:
        """Who is over target, urgent class first, then overall, then the worst class; None: nobody."""
        urgent = self.params.urgent_class
        if self.urgent_breach and urgent is not None:
            return (
                f"most urgent class {urgent} at {self.urgent_ratio:.2f}x its "
                f"{self.params.class_targets[urgent]:g}s target"
            )
        if self.ratio > 1.0:
            return f"TTFT p95 {self.ttft:.2f}s at {self.ratio:.2f}x the {self.params.ttft_target_s:g}s target"
        if self.worst_class is not None and self.worst_class[1] > 1.0:
            return f"class {self.worst_class[0]} at {self.worst_class[1]:.2f}x its target"
        return None

    @cached_property
    def slack(self) -> bool:
        """TTFT p95 is below the scale-down band overall and in every class."""
        band = self.params.scale_down_band
        return self.ratio < band and all(r < band for r in self.class_ratios.values())

    @cached_property
    def retrieval_note(self) -> str:
        """Said in every decision's reason while retrieval alone puts a class over target."""
        if not self.explained:
            return ""
        return (
            f"class {', '.join(self.explained)} over target only by retrieval's excess "
            f"({self.retrieval.message}): not scaling Triton for it"
        )

    @cached_property
    def assessment(self) -> tuple[_Load, PolicyState]:
        """This interval's load picture, and the state with what it taught (capacity, history)."""
        state = self.state
        if not self.fleet.warming and state.warming_since is not None:
            state = replace(state, warming_since=None)
        return _load(self.params, self.obs, self.fleet, state, self.now)

    @property
    def load(self) -> _Load:
        """This interval's load picture: rate, level, trend, backlog, capacity, replicas needed."""
        return self.assessment[0]

    @property
    def learned(self) -> PolicyState:
        """The state with this interval's load history and capacity evidence."""
        return self.assessment[1]

    @cached_property
    def window_s(self) -> float:
        """The scale-down stabilisation window in force (grown after premature scale-downs)."""
        return _scale_down_window(self.params, self.learned)

    @cached_property
    def up_text(self) -> str:
        """The numbers behind the replicas the load needs, for a reason."""
        return self.load.describe(self.params)

    @cached_property
    def metrics(self) -> Mapping[str, float | None]:
        """Every figure a decision on usable metrics is made from."""
        obs, load = self.obs, self.load
        metrics: dict[str, float | None] = {**self.base_metrics, "idle": 1.0 if self.idle else 0.0}
        if obs.retrieval_p95_s is not None:
            metrics["retrieval_p95_s"] = obs.retrieval_p95_s
            metrics["retrieval_excess_s"] = self.retrieval.excess_s
        metrics["ttft_ratio"] = self.ratio
        metrics["urgent_ttft_ratio"] = self.urgent_ratio
        metrics.update(
            {
                "load": load.now,
                "load_level": load.level,
                "load_trend": load.trend,
                "backlog_load": load.backlog,
                "forecast_load": load.forecast_up,
                "capacity_per_replica": load.capacity,
                "capacity_before": self.state.capacity,
                "work_per_request_s": load.work_per_request,
                "mean_prompt_tokens": self.learned.mean_prompt_tokens,
                "mean_output_tokens": self.learned.mean_output_tokens,
                "replicas_needed_by_load": None if load.needed_up is None else float(load.needed_up),
                "scale_down_window_s": self.window_s,
            }
        )
        return metrics


@dataclass(frozen=True)
class Recommendation:
    """What a replica rule asks for, before the stabilisation windows and the bounds."""

    #: The rule that asked (``Decision.rule`` when the windows and bounds let it through).
    rule: str
    replicas: int
    reason: str
    #: What the stabilisation window records instead of ``replicas`` (None: ``replicas``).
    record: int | None = None


@dataclass(frozen=True)
class Plan:
    """The replica target after the windows and bounds, and what the step carries on with."""

    rule: str
    target: int
    reason: str
    state: PolicyState
    metrics: Mapping[str, float | None]


#: A replica rule: the recommendation it makes, or None to pass on to the next rule.
ReplicaRule = Callable[[StepContext], Recommendation | None]


def fail_static(ctx: StepContext) -> Decision | None:
    """Stale or missing metrics prove nothing: hold the fleet as it is rather than act on a guess."""
    obs = ctx.obs
    if obs.usable:
        return None
    why = obs.stale_reason or obs.missing.get("ttft_p95_s") or "no TTFT data"
    return Decision(
        "hold",
        "holding: metrics unusable",
        f"fail-static: {why}",
        metrics=dict(ctx.base_metrics),
        rule="fail-static",
    )


def breach(ctx: StepContext) -> Recommendation | None:
    """A TTFT breach is what the forecast missed: add a replica now, unless the load is covered."""
    who = ctx.breach_who
    if who is None:
        return None
    current, needed, fleet = ctx.current, ctx.load.needed_up, ctx.fleet
    covered = needed is not None and current >= needed
    if fleet.warming and (covered or needed is None):
        return Recommendation(
            "breach",
            current,
            f"{who}, but {fleet.warming} warming replica(s) already cover the load "
            f"({ctx.up_text}): not scaling twice",
        )
    if covered and ctx.load.queue_shrinking and not ctx.urgent_breach:
        # TTFT reports requests that queued earlier: with capacity for the load and the queue
        # shrinking, the backlog is draining and another replica would come too late.
        return Recommendation(
            "breach",
            current,
            f"{who}, but the queue is draining ({ctx.obs.pending_requests or 0:.0f} waiting) and "
            f"{current} replicas cover the load ({ctx.up_text}): holding",
        )
    return Recommendation("breach", max(current + 1, needed or 0), f"{who}; {ctx.up_text}")


def feed_forward(ctx: StepContext) -> Recommendation | None:
    """Replicas take minutes to warm up: order what the forecast load needs before TTFT breaches."""
    needed = ctx.load.needed_up
    if needed is None or needed <= ctx.current:
        return None
    return Recommendation("feed-forward", needed, ctx.up_text)


def scale_down(ctx: StepContext) -> Recommendation | None:
    """Give replicas back only for a load that fell and stays down, with TTFT slack in every class."""
    needed, current, fleet, load = ctx.load.needed_up, ctx.current, ctx.fleet, ctx.load
    if needed is None or needed >= current:
        return None
    if fleet.warming and needed > fleet.ready_replicas:
        return Recommendation(
            "scale-down",
            current,
            f"{ctx.up_text}, but {fleet.warming} replica(s) ordered are still warming up and the "
            f"{fleet.ready_replicas} ready ones do not cover the load: not cancelling them",
        )
    if load.climbing or (load.now is not None and load.level is not None and load.now > 1.1 * load.level):
        # Not this interval; the window still records what the load needs.
        climbing = f", climbing over {ctx.params.climb_window_s:g}s" if load.climbing else ""
        return Recommendation(
            "scale-down",
            current,
            f"{ctx.up_text}, but load is rising ({load.now:.2f} vs {load.level:.2f}{climbing}): "
            "not scaling down",
            record=needed,
        )
    if ctx.slack:
        why = (
            "idle: no requests in the window"
            if ctx.idle
            else f"TTFT p95 at {ctx.ratio:.2f}x target leaves slack"
        )
        return Recommendation("scale-down", needed, f"{why}; {ctx.up_text}")
    return Recommendation(
        "scale-down",
        current,
        f"{ctx.up_text}, but TTFT p95 ({ctx.ratio:.2f}x target) leaves no slack to scale down",
    )


#: The replica rules in order of precedence: the first that makes a recommendation sets it.
REPLICA_RULES: tuple[ReplicaRule, ...] = (breach, feed_forward, scale_down)


def recommend(ctx: StepContext) -> Recommendation:
    """The first replica rule's recommendation; with none, hold the fleet's size."""
    for rule in REPLICA_RULES:
        recommendation = rule(ctx)
        if recommendation is not None:
            return recommendation
    return Recommendation("hold", ctx.current, "")


def stabilise(ctx: StepContext, rec: Recommendation) -> Plan:
    """One interval's recommendation is noisy: act on the windows' (HPA's rule), within the bounds."""
    params, now, current, window_s = ctx.params, ctx.now, ctx.current, ctx.window_s
    recommendation = _clamp(rec.replicas, params)
    record = recommendation if rec.record is None else _clamp(rec.record, params)
    keep_s = max(params.scale_down_stabilization_s * 4, window_s, params.scale_up_stabilization_s)
    # A fresh loop (start or operator restart) does not scale down at once (HPA does the same).
    previous = ctx.state.recommendations or ((now, current),)
    recommendations = (*((t, r) for t, r in previous if now - t < keep_s), (now, record))
    target, reason = recommendation, rec.reason
    if recommendation < current:
        # Highest recommendation inside the scale-down window wins (HPA's stabilization), and
        # at most a quarter of the fleet (at least one replica) goes per interval.
        window = [r for t, r in recommendations if now - t < window_s]
        stabilized = max([recommendation, *window])
        target = min(current, max(stabilized, current - max(1, current // 4)))
        if target == current:
            reason = f"{reason}; held by the {window_s:g}s scale-down window"
        elif target > recommendation:
            reason = f"{reason}; stepping down to {target} ({window_s:g}s window, a quarter per interval)"
    elif recommendation > current and params.scale_up_stabilization_s > 0:
        window = [r for t, r in recommendations if now - t < params.scale_up_stabilization_s]
        target = max(current, min([recommendation, *window]))
        if target == current:
            reason = f"{reason}; held by the {params.scale_up_stabilization_s:g}s scale-up window"
    # Bounds hold whatever the window says (a spec edit may have moved them under the fleet).
    target = _clamp(target, params)
    followed = target == recommendation and _sign(target - current) == _sign(rec.replicas - current)
    return Plan(
        rule=rec.rule if followed else "stabilisation",
        target=target,
        reason=reason,
        state=replace(ctx.learned, recommendations=recommendations),
        metrics=ctx.metrics,
    )


def regret(ctx: StepContext, plan: Plan) -> Plan:
    """A breach soon after a scale-down proves it premature: grow the scale-down window, relax it later."""
    params, state, now = ctx.params, ctx.state, ctx.now
    if plan.target > ctx.current and ctx.breach_who is not None:
        # Only a breach proves a scale-down premature; a feed-forward scale-up on a plateau's
        # swing does not (doubling the window there would hold the larger fleet for nothing).
        learned = _learn_from_regret(params, plan.state, now)
        window_after = _scale_down_window(params, learned)
        if window_after <= ctx.window_s:
            return replace(plan, state=learned)
        return replace(
            plan,
            state=learned,
            reason=(
                f"{plan.reason}; a scale-down {_seconds_since(state.last_scale_down_at, now):.0f}s ago was "
                f"premature: scale-down window {ctx.window_s:g}s -> {window_after:g}s"
            ),
            metrics={**plan.metrics, "scale_down_window_s": window_after},
        )
    if (
        state.scale_down_window_s
        and state.last_regret_at is not None
        and now - state.last_regret_at > 4 * state.scale_down_window_s
    ):
        # No regret for a long while: relax the window again (halve it, down to the spec's).
        relaxed = max(params.scale_down_stabilization_s, state.scale_down_window_s / 2)
        return replace(plan, state=replace(plan.state, scale_down_window_s=relaxed, last_regret_at=now))
    return plan


def scale(ctx: StepContext, plan: Plan) -> tuple[Decision, PolicyState] | None:
    """Order a target that differs from the fleet, noting when for the windows and the warm-up."""
    current, target, now = ctx.current, plan.target, ctx.now
    if target == current:
        return None
    action = "scale-up" if target > current else "scale-down"
    reason = f"{plan.reason}; {ctx.retrieval_note}" if ctx.retrieval_note else plan.reason
    state = replace(plan.state, last_scale_at=now)
    if target < current:
        state = replace(state, last_scale_down_at=now)
    elif not ctx.fleet.warming or state.warming_since is None:
        state = replace(state, warming_since=now)
    decision = Decision(
        action,
        f"{action} {current} -> {target} replicas",
        reason,
        replicas=target,
        metrics=dict(plan.metrics),
        rule=plan.rule,
    )
    return decision, state


def batching(ctx: StepContext, plan: Plan) -> tuple[Decision | None, PolicyState]:
    """A batching step is judged by the TTFT after it: take one only with a stable, serving fleet."""
    if not ctx.params.tune_batching or ctx.fleet.warming or ctx.idle:
        return None, plan.state
    # The step under trial is judged (and settled) whenever this runs, a new step or not.
    return _batching_step(
        ctx.params,
        ctx.obs,
        ctx.fleet,
        plan.state,
        ctx.now,
        ctx.ratio,
        dict(plan.metrics),
        breach=ctx.breach_who is not None,
    )


def hold(ctx: StepContext, plan: Plan) -> Decision:
    """Nothing changes: say why, with the load picture, the worst class and retrieval's share."""
    within = (
        "idle: no requests in the window"
        if ctx.idle
        else f"TTFT p95 {ctx.ttft:.2f}s ({ctx.ratio:.2f}x target) within band"
    )
    reason = plan.reason or f"{within}; {ctx.up_text}"
    if ctx.worst_class is not None:
        reason += f"; worst class {ctx.worst_class[0]} at {ctx.worst_class[1]:.2f}x its target"
    if ctx.retrieval_note:
        reason += f"; {ctx.retrieval_note}"
    return Decision(
        "hold", f"hold at {ctx.current} replicas", reason, metrics=dict(plan.metrics), rule=plan.rule
    )


def decide(
    params: PolicyParams,
    obs: Observation,
    fleet: FleetState,
    state: PolicyState,
    now: float,
) -> tuple[Decision, PolicyState]:
    """One control-loop step. Returns the decision and the state to pass to the next step."""
    ctx = StepContext(params, obs, fleet, state, now)
    held = fail_static(ctx)
    if held is not None:
        return held, state
    plan = regret(ctx, stabilise(ctx, recommend(ctx)))
    scaled = scale(ctx, plan)
    if scaled is not None:
        return scaled
    decision, next_state = batching(ctx, plan)
    return (decision if decision is not None else hold(ctx, plan)), next_state


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def _seconds_since(at: float | None, now: float) -> float:
    """Seconds since ``at`` (a time of 0.0 is a time, not "never")."""
    return 0.0 if at is None else now - at


def _learn_from_regret(params: PolicyParams, state: PolicyState, now: float) -> PolicyState:
    """A scale-up soon after a scale-down means the replicas were given back too early (load
    that comes back in bursts): double the scale-down window, up to ``max_scale_down_window_s``."""
    last_down = state.last_scale_down_at
    if last_down is None or now - last_down > params.regret_s:
        return state
    base = _scale_down_window(params, state)
    longer = min(params.max_scale_down_window_s, max(base * 2, params.scale_down_stabilization_s))
    return replace(state, scale_down_window_s=longer, last_regret_at=now, last_scale_down_at=None)


def within_bounds(config: BatchingConfig, params: PolicyParams) -> BatchingConfig:
    """Clamp a batching config into the spec's envelope (delay, preferred sizes, instances)."""
    largest = min(params.max_preferred_batch_size, params.max_batch_size)
    return BatchingConfig(
        preferred_batch_sizes=tuple(sorted({s for s in config.preferred_batch_sizes if 1 <= s <= largest})),
        max_queue_delay_us=max(
            params.min_queue_delay_us, min(params.max_queue_delay_us, config.max_queue_delay_us)
        ),
        instance_count=max(params.min_instance_count, min(params.max_instance_count, config.instance_count)),
    )


def _batching_step(
    params: PolicyParams,
    obs: Observation,
    fleet: FleetState,
    state: PolicyState,
    now: float,
    ratio: float,
    metrics: dict[str, float | None],
    breach: bool = False,
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
                    batching=within_bounds(trial.previous, params),
                    metrics=metrics,
                    rule="batching",
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
    if params.inflight_batching:
        if current.max_queue_delay_us > params.min_queue_delay_us:
            proposal, direction = current.with_delay(params.min_queue_delay_us), "narrow"
            why = (
                f"the backend batches in flight: Triton's {current.max_queue_delay_us} us queue delay only "
                f"adds latency, back to the minimum {params.min_queue_delay_us} us"
            )
    elif queue is not None and compute is not None and queue > compute and ratio > params.batching_slack_band:
        # Queueing dominates TTFT: hold requests less, dispatch smaller batches sooner; once the
        # delay is at its minimum, run one more model instance if the bounds allow.
        split = f"queue time {queue * 1000:.1f} ms exceeds compute {compute * 1000:.1f} ms"
        if current.max_queue_delay_us > params.min_queue_delay_us:
            delay = max(params.min_queue_delay_us, current.max_queue_delay_us // 2)
            proposal, direction = current.with_delay(delay), "narrow"
            why = f"{split}: halve the queue delay ({current.max_queue_delay_us} -> {delay} us)"
        elif current.instance_count < params.max_instance_count:
            proposal = replace(current, instance_count=current.instance_count + 1)
            direction = "narrow"
            why = (
                f"{split} with the queue delay at its minimum: one more model instance "
                f"({current.instance_count} -> {current.instance_count + 1})"
            )
    elif ratio < params.batching_slack_band and not breach and blocked != "widen":
        busy = obs.gpu_utilization is None or obs.gpu_utilization >= 0.6
        batch = obs.mean_batch_size
        largest = max(current.preferred_batch_sizes, default=params.max_batch_size)
        if busy and current.max_queue_delay_us < params.max_queue_delay_us:
            delay = min(params.max_queue_delay_us, max(500, current.max_queue_delay_us * 2))
            proposal, direction = current.with_delay(delay), "widen"
            why = (
                f"TTFT has slack ({ratio:.2f}x target) and GPUs are busy "
                f"({'n/a' if obs.gpu_utilization is None else f'{obs.gpu_utilization:.0%}'}): "
                f"queue delay {current.max_queue_delay_us} -> {delay} us for larger batches"
            )
        elif (
            busy
            and batch is not None
            and batch >= 0.8 * largest
            and largest * 2 <= params.max_preferred_batch_size
            and current.preferred_batch_sizes
        ):
            sizes = tuple(sorted({*current.preferred_batch_sizes, largest * 2}))
            proposal, direction = replace(current, preferred_batch_sizes=sizes), "widen"
            why = f"batches fill the largest preferred size ({batch:.1f} of {largest}): allow {largest * 2}"
    if proposal is not None:
        proposal = within_bounds(proposal, params)
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
            rule="batching",
        ),
        replace(state, trial=trial, last_batching_at=now),
    )
