"""``phoenix plan``: replay a trace against candidate PhoenixDeployments before applying one.

Each PhoenixDeployment becomes one row of the benchmark's table, simulated on the same workload
with its own Triton configuration and, in ``auto`` mode, the operator's own control loop, so a user
sees what a spec would do before it runs. Details: docs/benchmark.md#what-if-before-applying-phoenix-plan.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml

from phoenix_operator.api.documents import load_documents, parse_phoenix_deployments
from phoenix_operator.api.models import (
    MAX_PROMPT_TOKEN_WEIGHT,
    AutoscalingMode,
    PhoenixDeployment,
    PhoenixDeploymentSpec,
)
from phoenix_operator.render.tritonconfig import model_config_dict
from phoenix_operator.sim.bench import BenchReport, PolicyRun, make_context, run_policy, to_markdown
from phoenix_operator.sim.config import BatcherConfig
from phoenix_operator.sim.controllers import REGISTRY, BenchContext, ControllerFactory, StaticController
from phoenix_operator.sim.cost import BlockingBatchCost, LLMEngineCost
from phoenix_operator.sim.fleet import LB_POLICIES, simulate
from phoenix_operator.sim.modelconfig import batcher_from_model_config
from phoenix_operator.sim.options import (
    WorkloadOptions,
    build_workload,
    describe_workload,
    options_from,
    workload_options,
)
from phoenix_operator.sim.phoenix import PhoenixController, params_for
from phoenix_operator.sim.profile import DEFAULT_PROFILE, Profile, load_profile
from phoenix_operator.sim.report import output_options, render_table, report_console, write_outputs
from phoenix_operator.sim.request import Arrival
from phoenix_operator.sim.workloads import DEFAULT_MIX, Workload
from phoenix_operator.stats import percentile

# --------------------------------------------------------------------------------------------
# Calibration: a load test of one replica


@dataclass(frozen=True)
class LoadStep:
    """One rate of the load test: offered, what the replica served, and whether it held the SLO."""

    offered_rps: float
    served_rps: float
    ttft_p95_s: float
    passed: bool
    #: First tokens the replica delivered per second over the step's second half, whenever
    #: their requests arrived: under overload, the most it completes.
    throughput_rps: float = 0.0


@dataclass(frozen=True)
class Calibration:
    """A replica's capacity from a load test: the highest rate it served within the TTFT target,
    and the most it served at all (saturation)."""

    requests_per_second: float
    prompt_tokens: float
    output_tokens: float
    ttft_target_s: float
    target: str
    steps: tuple[LoadStep, ...]
    saturation_rps: float
    #: A prompt token's cost relative to a generated one, from the two halves' load tests
    #: (:func:`calibrate_replica`); None = not measured.
    prompt_token_weight: float | None = None
    #: The load tests of the mix's answer-heavy and prompt-heavy halves the weight came from.
    halves: tuple[Calibration, ...] = ()

    def replica_capacity(self) -> dict[str, float]:
        """``spec.autoscaling.replicaCapacity`` as the API takes it."""
        block = {
            "requestsPerSecond": round(self.requests_per_second, 3),
            "saturationRequestsPerSecond": round(self.saturation_rps, 3),
            "promptTokens": round(self.prompt_tokens, 1),
            "outputTokens": round(self.output_tokens, 1),
        }
        if self.prompt_token_weight is not None:
            block["promptTokenWeight"] = round(self.prompt_token_weight, 4)
        return block

    def spec_snippet(self) -> str:
        """The YAML to merge into a PhoenixDeployment."""
        return yaml.safe_dump(
            {"spec": {"autoscaling": {"replicaCapacity": self.replica_capacity()}}}, sort_keys=False
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "replica_capacity": self.replica_capacity(),
            "ttft_target_s": self.ttft_target_s,
            "target": self.target,
            "steps": [
                {
                    "offered_rps": st.offered_rps,
                    "served_rps": st.served_rps,
                    "ttft_p95_s": None if math.isinf(st.ttft_p95_s) else st.ttft_p95_s,
                    "passed": st.passed,
                    "throughput_rps": st.throughput_rps,
                }
                for st in self.steps
            ],
        }
        if self.halves:
            data["halves"] = [half.to_json() for half in self.halves]
        return data


#: Judge a step on what arrived in its second half: the first half fills the engine.
CALIBRATION_STEP_S = 600.0
#: The saturation step's rate, as a multiple of the lowest rate that broke the target.
OVERLOAD = 1.25


def token_mix(
    workload: Workload, cost: LLMEngineCost | BlockingBatchCost | None = None
) -> list[tuple[int, int]]:
    """(prompt, output) tokens of every request, as the engine sees them (clipped to its limits)."""
    pairs = [(a.prompt_tokens, a.output_tokens) for a in workload.arrivals]
    if isinstance(cost, LLMEngineCost):
        pairs = [cost.clip(p, o) for p, o in pairs]
    if not pairs:
        raise ValueError("the workload has no requests to take a token mix from")
    return pairs


def load_test_replica(
    cost: LLMEngineCost | BlockingBatchCost,
    batching: BatcherConfig,
    mix: Sequence[tuple[int, int]],
    ttft_target_s: float,
    *,
    target: str = "simulated replica",
    step_s: float = CALIBRATION_STEP_S,
    start_rps: float = 0.25,
    growth: float = 1.25,
    refine: int = 4,
    max_steps: int = 60,
    seed: int = 0,
) -> Calibration:
    """Ramp Poisson load against one replica until TTFT p95 breaks the target, then bisect.

    Every step is a fresh replica running ``step_s`` seconds of requests drawn from ``mix``
    (with replacement, one seed for every step, so steps differ by rate alone); the step passes
    when every request arriving in its second half got a first token and their p95 is within
    the target. The capacity is the highest passing rate; a last step at ``OVERLOAD`` x the
    lowest failing rate keeps the queue full, and the most first tokens per second any step
    delivered in its second half is the saturation. This measures the engine the way a
    load test of a real pod does: by what it serves, not by a formula of its cost.
    """
    if ttft_target_s <= 0 or start_rps <= 0 or growth <= 1 or step_s <= 0:
        raise ValueError("ttft_target_s, start_rps and step_s must be > 0 and growth > 1")
    pairs = np.asarray(mix, dtype=float)
    steps: list[LoadStep] = []

    def run(rate: float) -> LoadStep:
        rng = np.random.default_rng(seed)
        gaps = rng.exponential(1.0 / rate, size=int(rate * step_s * 1.5) + 16)
        times = np.cumsum(gaps)
        times = times[times < step_s]
        picks = pairs[rng.integers(0, len(pairs), size=len(times))]
        arrivals = [
            Arrival(float(t), prompt_tokens=int(p), output_tokens=int(o))
            for t, (p, o) in zip(times, picks, strict=True)
        ]
        records = simulate(arrivals, batching, cost, replicas=1, max_drain_s=max(30.0, 2 * ttft_target_s))
        judged = [r.ttft_s for r in records if r.arrival_s >= step_s / 2]
        if not judged:
            return LoadStep(rate, 0.0, 0.0, True)
        p95 = percentile(judged, 95)
        served = sum(1 for v in judged if math.isfinite(v)) / (step_s / 2)
        delivered = sum(
            1 for r in records if r.first_token_s is not None and step_s / 2 <= r.first_token_s < step_s
        ) / (step_s / 2)
        step = LoadStep(rate, served, p95, p95 <= ttft_target_s, delivered)
        steps.append(step)
        return step

    rate = start_rps
    if not run(rate).passed:
        raise ValueError(
            f"one replica cannot serve even {start_rps:g} req/s within the {ttft_target_s:g} s TTFT target"
        )
    good, bad = rate, None
    for _ in range(max_steps):
        rate = good * growth
        if run(rate).passed:
            good = rate
        else:
            bad = rate
            break
    if bad is not None:
        for _ in range(refine):
            mid = math.sqrt(good * bad)
            if run(mid).passed:
                good = mid
            else:
                bad = mid
    # Saturation: what the replica completes once the queue never empties (its batches as full
    # as the engine allows), from a step well past the cliff.
    run(OVERLOAD * (bad if bad is not None else good))
    prompt, output = (float(v) for v in pairs.mean(axis=0))
    saturation = max(good, *(st.throughput_rps for st in steps))
    return Calibration(
        good,
        prompt,
        output,
        ttft_target_s,
        target,
        tuple(sorted(steps, key=lambda s: s.offered_rps)),
        saturation_rps=saturation,
    )


#: The halves' prompt shares must differ by this much for their capacities to tell a prompt
#: token's cost from a generated one's (a uniform mix cannot).
MIN_SHARE_SPREAD = 0.1


def calibrate_replica(
    cost: LLMEngineCost | BlockingBatchCost,
    batching: BatcherConfig,
    mix: Sequence[tuple[int, int]],
    ttft_target_s: float,
    *,
    target: str = "simulated replica",
    step_s: float = CALIBRATION_STEP_S,
) -> Calibration:
    """The load test of the whole mix, plus one of each half split by prompt share.

    If a request costs ``k (output + w prompt)``, each half's capacity ``C`` satisfies
    ``C (o + w p) = 1 / k``: two halves with different prompt shares give ``w`` -- a measured
    weight for rescaling capacity to the live mix, where the policy's default (0.2) is a guess.
    """
    whole = load_test_replica(cost, batching, mix, ttft_target_s, target=target, step_s=step_s)
    weight, halves = _measured_prompt_weight(cost, batching, mix, ttft_target_s, target, step_s)
    return replace(whole, prompt_token_weight=weight, halves=halves)


def _measured_prompt_weight(
    cost: LLMEngineCost | BlockingBatchCost,
    batching: BatcherConfig,
    mix: Sequence[tuple[int, int]],
    ttft_target_s: float,
    target: str,
    step_s: float,
) -> tuple[float | None, tuple[Calibration, ...]]:
    pairs = sorted(mix, key=lambda pair: pair[0] / max(1, pair[0] + pair[1]))
    half = len(pairs) // 2
    if half < 2:
        return None, ()
    answer_heavy, prompt_heavy = pairs[:half], pairs[half:]

    def share(part: Sequence[tuple[int, int]]) -> float:
        prompt = sum(p for p, _ in part)
        return prompt / max(1, prompt + sum(o for _, o in part))

    if share(prompt_heavy) - share(answer_heavy) < MIN_SHARE_SPREAD:
        return None, ()
    try:
        a, b = (
            load_test_replica(cost, batching, part, ttft_target_s, target=target, step_s=step_s)
            for part in (answer_heavy, prompt_heavy)
        )
    except ValueError:
        return None, ()
    ca, cb = a.requests_per_second, b.requests_per_second
    denominator = ca * a.prompt_tokens - cb * b.prompt_tokens
    if denominator == 0:
        return None, (a, b)
    weight = (cb * b.output_tokens - ca * a.output_tokens) / denominator
    if not math.isfinite(weight) or weight < 0:
        return None, (a, b)
    return min(weight, MAX_PROMPT_TOKEN_WEIGHT), (a, b)


def batcher_config(spec: PhoenixDeploymentSpec) -> BatcherConfig:
    """The Triton batching a spec renders, read back as Triton reads it.

    The spec goes through the operator's own renderer (``render.tritonconfig``) and the twin's
    parser, so ``phoenix plan`` simulates exactly the ``max_batch_size``, ``dynamic_batching``
    and instances the ConfigMap carries. With ``batching.enabled: false`` Triton runs no dynamic
    batcher: simulated as batching that sends whatever is pending at once.
    """
    return batcher_from_model_config(model_config_dict(spec))


def spec_classes(spec: PhoenixDeploymentSpec, profile: Profile) -> dict[str, int]:
    """Class name -> Triton priority the workload's requests are sent with."""
    if spec.priority is None:
        return dict(profile.classes)  # names for the report; Triton runs one FIFO level
    return {c.name: c.level for c in spec.priority.classes}


@dataclass
class Candidate:
    """One PhoenixDeployment as the plan simulates it."""

    name: str
    source: str
    spec: PhoenixDeploymentSpec
    how: str
    notes: list[str] = field(default_factory=list)
    controller: StaticController | PhoenixController | None = None


def describe(spec: PhoenixDeploymentSpec) -> tuple[str, list[str]]:
    """How a spec is simulated, in one line, plus notes."""
    auto = spec.autoscaling
    b = batcher_config(spec)
    sizes = ",".join(map(str, b.preferred_batch_sizes)) or "unset"
    batching = (
        f"maxBatchSize {b.max_batch_size}, preferred [{sizes}], delay {b.max_queue_delay_us} us, "
        f"{b.instance_count} instance(s), "
        + (f"{b.priority_levels} priority levels" if b.priority_levels else "one FIFO level")
    )
    notes: list[str] = []
    if auto.mode == AutoscalingMode.AUTO:
        cap = auto.max_replicas
        if auto.gpu_budget is not None and spec.triton.gpus_per_replica > 0:
            cap = min(cap, auto.gpu_budget // spec.triton.gpus_per_replica)
        start = max(auto.min_replicas, min(cap, spec.triton.replicas))
        how = (
            f"Phoenix loop (auto): {auto.min_replicas}-{cap} replicas from {start}, every "
            f"{auto.interval_seconds} s, TTFT p95 target {auto.ttft_p95_target_seconds:g} s"
            + (", retuning batching" if auto.tune_batching and spec.batching.enabled else "")
            + f"; {batching}"
        )
    else:
        how = f"static {spec.triton.replicas} replicas (autoscaling {auto.mode}); {batching}"
        if auto.mode == AutoscalingMode.RECOMMEND:
            notes.append(
                "recommend mode only reports decisions, so it is simulated as the static fleet of "
                "triton.replicas"
            )
    if spec.triton.gpus_per_replica != 1:
        notes.append(
            f"triton.gpusPerReplica is {spec.triton.gpus_per_replica}: GPU-hours and cost count "
            f"{max(spec.triton.gpus_per_replica, 1)} GPU(s) per replica, but the engine's speed is the "
            "profile's (one GPU)"
        )
    return how, notes


def candidates(files: Sequence[str]) -> list[Candidate]:
    """Every PhoenixDeployment in the files, validated (errors name the field)."""
    out: list[Candidate] = []
    seen: dict[str, int] = {}
    for path in files:
        deployments: list[PhoenixDeployment] = parse_phoenix_deployments(load_documents(path))
        if not deployments:
            raise click.ClickException(f"no PhoenixDeployment in {path}")
        for pd in deployments:
            base = str(pd.metadata.get("name") or Path(path).stem)
            seen[base] = seen.get(base, 0) + 1
            name = base if seen[base] == 1 else f"{base}#{seen[base]}"
            spec = pd.spec
            if spec.triton.replicas < 1 and spec.autoscaling.mode != AutoscalingMode.AUTO:
                raise click.ClickException(
                    f"invalid PhoenixDeployment {base}:\n  spec.triton.replicas: 0 replicas serve nothing "
                    "(set at least 1, or autoscaling.mode: auto)"
                )
            how, notes = describe(spec)
            out.append(Candidate(name=name, source=path, spec=spec, how=how, notes=notes))
    return out


def _controller(candidate: Candidate, ctx: BenchContext) -> StaticController | PhoenixController:
    spec = candidate.spec
    auto = spec.autoscaling
    if auto.mode != AutoscalingMode.AUTO:
        return StaticController(candidate.name, spec.triton.replicas)
    params = params_for(spec)
    start = max(params.min_replicas, min(params.replica_cap, spec.triton.replicas))
    return PhoenixController(
        params=params, name=candidate.name, interval_s=float(auto.interval_seconds), initial_replicas=start
    )


@contextmanager
def _registered(name: str, factory: ControllerFactory) -> Iterator[None]:
    """Run a candidate through the benchmark's own ``run_policy`` (it creates policies by name)."""
    saved = REGISTRY.get(name)
    REGISTRY[name] = factory
    try:
        yield
    finally:
        if saved is None:
            REGISTRY.pop(name, None)
        else:
            REGISTRY[name] = saved


def run_candidate(
    candidate: Candidate,
    workload_for: Callable[[dict[str, int]], Workload],
    profile: Profile,
    slo_ttft_s: float,
    seed: int,
    quick: bool,
    lb: str,
    price: float,
) -> tuple[PolicyRun, BenchContext]:
    """Simulate one candidate on the workload (built with its priority classes)."""
    spec = candidate.spec
    classes = spec_classes(spec, profile)
    cand_profile = replace(profile, batching=batcher_config(spec), classes=classes)
    workload: Workload = workload_for(classes)
    auto = spec.autoscaling
    max_replicas = max(auto.max_replicas, spec.triton.replicas, 1)
    ctx = make_context(workload, cand_profile, slo_ttft_s, seed, quick, lb, max_replicas)

    def factory(_ctx: BenchContext) -> StaticController | PhoenixController:
        candidate.controller = _controller(candidate, ctx)
        return candidate.controller

    with _registered(candidate.name, factory):
        run = run_policy(ctx, candidate.name, price)
    gpus = max(spec.triton.gpus_per_replica, 1)
    if gpus != 1:
        for figures in (run.figures, run.figures.get("whole_run") or {}):
            figures["gpu_hours"] *= gpus
            figures["cost_usd"] *= gpus
    if auto.mode == AutoscalingMode.AUTO and auto.replica_startup_seconds != profile.startup_s:
        candidate.notes.append(
            f"autoscaling.replicaStartupSeconds is {auto.replica_startup_seconds}: the loop forecasts that "
            f"far ahead, but simulated pods take the profile's {profile.startup_s:g} s to start"
        )
    run.note = "; ".join(candidate.notes)
    return run, ctx


@click.command("plan")
@click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    help="PhoenixDeployment YAML (repeatable; every PhoenixDeployment in a file is a candidate). "
    "Required unless --calibrate.",
)
@workload_options
@click.option(
    "--slo-ttft",
    type=float,
    default=None,
    help="TTFT target the table counts against (default: the first spec's autoscaling.ttftP95TargetSeconds).",
)
@click.option(
    "--profile",
    "profile_name",
    default=DEFAULT_PROFILE,
    show_default=True,
    help="Packaged profile name or path to a profile YAML (the model on one GPU).",
)
@click.option(
    "--lb",
    type=click.Choice(list(LB_POLICIES)),
    default="least-pending",
    show_default=True,
    help="Load balancing over ready pods (least-pending: an L7 gateway; round-robin: kube-proxy).",
)
@click.option("--price", type=float, default=None, help="USD per GPU-hour (default: the profile's).")
@click.option(
    "--compare",
    default="",
    help="Also run these bench policies on the same workload (e.g. oracle,static-peak), "
    "with the profile's batching.",
)
@click.option(
    "--explain", is_flag=True, help="Print every replica/batching change Phoenix made, with its reason."
)
@click.option(
    "--calibrate",
    is_flag=True,
    help="Instead of comparing specs, load-test one replica of the profile (with the first spec's batching "
    "and TTFT target when -f is given) at the trace's token mix, and print the "
    "spec.autoscaling.replicaCapacity block to paste into the PhoenixDeployment (--json writes the steps).",
)
@output_options(json_help="Write the figures as JSON here (bench's layout).")
def plan(
    files: tuple[str, ...],
    slo_ttft: float | None,
    profile_name: str,
    lb: str,
    price: float | None,
    compare: str,
    explain: bool,
    calibrate: bool,
    json_path: Path | None,
    markdown_path: Path | None,
    **workload: Any,
) -> None:
    """Replay a trace against candidate PhoenixDeployment specs and compare them side by side."""
    console = report_console(150)
    started = time.perf_counter()
    if calibrate:
        _calibrate(console, files, slo_ttft, profile_name, json_path, options_from(workload))
        console.print(f"calibration took {time.perf_counter() - started:.1f} s")
        return
    if not files:
        raise click.UsageError("give at least one -f/--filename (or --calibrate)")
    cands = candidates(files)
    profile = load_profile(profile_name)
    for cand in cands:
        if cand.spec.priority is not None:
            missing = sorted(set(DEFAULT_MIX) - {c.name for c in cand.spec.priority.classes})
            if missing:
                raise click.ClickException(
                    f"invalid PhoenixDeployment {cand.name}:\n  spec.priority.classes: the replayed traffic "
                    f"has {', '.join(f'{k} ({v:.0%})' for k, v in DEFAULT_MIX.items())} requests; "
                    f"no class named {', '.join(missing)}"
                )
    extra = [n.strip() for n in compare.split(",") if n.strip()]
    unknown_policies = [n for n in extra if n not in REGISTRY]
    if unknown_policies:
        raise click.BadParameter(
            f"unknown policies {unknown_policies}; known: {sorted(REGISTRY)}", param_hint="--compare"
        )
    slo = slo_ttft if slo_ttft is not None else cands[0].spec.autoscaling.ttft_p95_target_seconds
    opts = options_from(workload)
    price_usd = profile.price_per_gpu_hour_usd if price is None else price

    def workload_for(classes: dict[str, int]) -> Workload:
        return build_workload(opts, classes)

    runs: list[PolicyRun] = []
    first_ctx: BenchContext | None = None
    for cand in cands:
        run, ctx = run_candidate(cand, workload_for, profile, slo, opts.seed, opts.quick, lb, price_usd)
        runs.append(run)
        first_ctx = first_ctx or ctx
    assert first_ctx is not None
    if extra:
        base_ctx = make_context(workload_for(dict(profile.classes)), profile, slo, opts.seed, opts.quick, lb)
        runs.extend(run_policy(base_ctx, name, price_usd) for name in extra)
    report = BenchReport(context=first_ctx, price_per_gpu_hour_usd=price_usd, runs=runs)

    console.print(render_table(report))
    console.print(
        describe_workload(first_ctx) + " (Phoenix candidates start at their triton.replicas).", markup=False
    )
    for cand in cands:
        console.print(f"{cand.name} ({cand.source}): {cand.how}", markup=False)
        for note in cand.notes:
            console.print(f"  * {note}", markup=False)
    if extra:
        console.print(
            f"compared with: {', '.join(extra)} (profile {profile.name}'s batching, bench's sizing)"
        )
    console.print(
        f"profile {profile.name}: one GPU per replica, pod start-up {profile.startup_s:g} s, LB {lb}, "
        f"${price_usd:g}/GPU-h; SLO attainment counts TTFT <= {slo:g} s."
    )
    if explain:
        for cand in cands:
            if isinstance(cand.controller, PhoenixController):
                console.print(f"[bold]{cand.name}[/bold]: Phoenix's changes")
                changes = [(t, d) for t, d in cand.controller.decisions if d.changes_something]
                for t, d in changes:
                    console.print(f"  {t:7.0f} s  {d.summary}: {d.reason}", soft_wrap=True, markup=False)
                if not changes:
                    console.print("  (none)")

    def data() -> dict[str, Any]:
        out = report.to_json()
        out["candidates"] = [
            {"name": c.name, "source": c.source, "simulated_as": c.how, "notes": c.notes} for c in cands
        ]
        return out

    write_outputs(console, json_path, data, markdown_path, lambda: to_markdown(report))
    console.print(f"plan took {time.perf_counter() - started:.1f} s")


_HALVES = ("the mix's answer-heavy half", "the mix's prompt-heavy half")


def _print_load_test(console: Any, test: Calibration, mix_name: str, slo: float) -> None:
    console.print(
        f"load test of {test.target}: Poisson steps of {CALIBRATION_STEP_S:g} s at {mix_name} "
        f"(mean {test.prompt_tokens:.0f} prompt / {test.output_tokens:.0f} output tokens), "
        f"judged on TTFT p95 <= {slo:g} s over each step's second half",
        markup=False,
    )
    for st in test.steps:
        p95 = "never (unserved)" if math.isinf(st.ttft_p95_s) else f"{st.ttft_p95_s:.2f} s"
        console.print(
            f"  {st.offered_rps:8.3f} req/s offered, {st.served_rps:8.3f} served, "
            f"{st.throughput_rps:8.3f} completed/s, TTFT p95 {p95:>16}  "
            f"{'ok' if st.passed else 'over target'}",
            markup=False,
        )


def _calibrate(
    console: Any,
    files: Sequence[str],
    slo_ttft: float | None,
    profile_name: str,
    json_path: Path | None,
    opts: WorkloadOptions,
) -> Calibration:
    """``phoenix plan --calibrate``: the load test, its steps, and the block for the spec."""
    profile = load_profile(profile_name)
    batching = profile.batching
    slo = 3.0 if slo_ttft is None else slo_ttft
    target = f"one simulated replica of profile {profile.name}"
    if files:
        spec = candidates(files[:1])[0].spec
        batching = batcher_config(spec)
        slo = spec.autoscaling.ttft_p95_target_seconds if slo_ttft is None else slo_ttft
        target += f" with {files[0]}'s batching"
    cost = LLMEngineCost(profile)
    workload = build_workload(opts, dict(profile.classes))
    try:
        result = calibrate_replica(cost, batching, token_mix(workload, cost), slo, target=target)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    tests = ((result, f"{workload.name}'s token mix"), *zip(result.halves, _HALVES, strict=True))
    for test, mix_name in tests:
        _print_load_test(console, test, mix_name, slo)
    weight = (
        "not measured (the halves' prompt shares are too alike), the loop uses 0.2"
        if result.prompt_token_weight is None
        else f"{result.prompt_token_weight:.4f} of a generated token"
    )
    console.print(
        f"a replica serves {result.requests_per_second:.3f} req/s within the target and "
        f"{result.saturation_rps:.3f} at most; a prompt token costs {weight}. Put this into the "
        "PhoenixDeployment:",
        markup=False,
    )
    console.print(result.spec_snippet(), markup=False)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {json_path}")
    return result
