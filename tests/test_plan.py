"""`phoenix plan`: candidate PhoenixDeployments replayed on a trace, compared in bench's table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from phoenix_operator.api.models import PhoenixDeploymentSpec
from phoenix_operator.cli import COMMANDS, main
from phoenix_operator.control.policy import PolicyParams
from phoenix_operator.sim.config import BatcherConfig
from phoenix_operator.sim.controllers import REGISTRY
from phoenix_operator.sim.cost import BlockingBatchCost, LLMEngineCost
from phoenix_operator.sim.options import WorkloadOptions, build_workload
from phoenix_operator.sim.plan import batcher_config, calibrate_replica, load_test_replica, token_mix
from phoenix_operator.sim.profile import DEFAULT_PROFILE, load_profile

CLASSES = [
    {"name": "urgent", "level": 1, "ttftTargetSeconds": 1.5},
    {"name": "standard", "level": 2, "ttftTargetSeconds": 3},
    {
        "name": "bulk",
        "level": 3,
        "ttftTargetSeconds": 10,
        "queuePolicy": {"timeoutMicroseconds": 30_000_000, "timeoutAction": "REJECT"},
    },
]


def _trace(path: Path, n: int = 2400, seconds: float = 600.0) -> Path:
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, seconds, n))
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    rows += [f"{x:.6f},{int(rng.integers(200, 2000))},{int(rng.integers(20, 300))}" for x in t]
    path.write_text("\n".join(rows) + "\n")
    return path


def _pd(name: str, replicas: int, mode: str = "off", **spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "serving.phoenixoperator.io/v1alpha1",
        "kind": "PhoenixDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "name": "llama",
                "backend": "tensorrtllm",
                "maxBatchSize": 8,
                "repository": {"uri": "s3://models/llama"},
            },
            "triton": {"replicas": replicas},
            "batching": {"preferredBatchSizes": [], "maxQueueDelayMicroseconds": 0},
            "priority": {"defaultClass": "standard", "classes": CLASSES},
            "autoscaling": {"mode": mode},
        },
    }
    if mode != "off":
        doc["spec"]["autoscaling"].update(
            {
                "prometheusUrl": "http://prometheus:9090",
                "minReplicas": 1,
                "maxReplicas": 6,
                "intervalSeconds": 15,
            }
        )
    for key, value in spec.items():
        doc["spec"][key] = value
    return doc


def _write(path: Path, *docs: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(path)


def _plan(*args: str) -> Any:
    return CliRunner().invoke(main, ["plan", *args])


def test_plan_is_a_phoenix_subcommand() -> None:
    assert COMMANDS["plan"] == "phoenix_operator.sim.plan:plan"


def test_plan_compares_candidates_in_benchs_table_and_json(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.csv")
    one = _write(tmp_path / "a.yaml", _pd("two-static", 2), _pd("phoenix-auto", 2, "auto"))
    other = _write(tmp_path / "b.yaml", _pd("three-recommend", 3, "recommend"))
    out = tmp_path / "plan.json"
    md = tmp_path / "plan.md"
    result = _plan(
        "-f", one, "-f", other, "--trace", str(trace), "--scenario", "cold-peak", "--multiplier", "2",
        "--json", str(out),
        "--markdown", str(md), "--compare", "static-avg", "--explain",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("two-static", "phoenix-auto", "three-recommend", "static-avg"):
        assert name in result.output
    assert "static 2 replicas (autoscaling off)" in result.output
    assert "Phoenix loop (auto): 1-6 replicas from 2" in result.output
    assert "recommend mode only reports decisions" in result.output
    assert "phoenix-auto: Phoenix's changes" in result.output
    data = json.loads(out.read_text())
    assert {"workload", "slo_ttft_s", "policies", "candidates"} <= set(data)
    assert data["slo_ttft_s"] == 3.0
    assert data["workload"]["requests"] == 2400
    names = [p["name"] for p in data["policies"]]
    assert names == ["two-static", "phoenix-auto", "three-recommend", "static-avg"]
    by_name = {p["name"]: p for p in data["policies"]}
    for p in data["policies"]:
        for key in ("slo_attainment", "urgent_slo_attainment", "ttft_p95_s", "gpu_hours", "scaling_actions"):
            assert key in p
    assert by_name["two-static"]["scaling_actions"] == 0
    assert by_name["two-static"]["mean_replicas"] == 2.0
    assert by_name["three-recommend"]["mean_replicas"] == 3.0
    assert by_name["three-recommend"]["gpu_hours"] > by_name["two-static"]["gpu_hours"]
    assert md.read_text().startswith("| policy | SLO att.")
    # The candidates were registered only for the run.
    assert not {"two-static", "phoenix-auto", "three-recommend"} & set(REGISTRY)


def test_plan_replays_bench_default_peak_hour_and_uses_the_specs_warm_up(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.csv")
    slow = _pd("slow-start", 2, "auto")
    slow["spec"]["autoscaling"]["replicaStartupSeconds"] = 300
    out = tmp_path / "plan.json"
    result = _plan(
        "-f", _write(tmp_path / "a.yaml", slow), "--trace", str(trace), "--multiplier", "4",
        "--lead-in", "30", "--ramp", "60", "--hold", "90", "--json", str(out), "--compare", "oracle",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "table measured over the peak, 90-180 s" in text
    assert "replicaStartupSeconds is 300: the loop forecasts that far ahead" in text
    data = json.loads(out.read_text())
    assert data["workload"]["shape"]["kind"] == "peak-hour"
    assert data["workload"]["measured_window_s"] == [90.0, 180.0]
    assert [p["name"] for p in data["policies"]] == ["slow-start", "oracle"]
    assert all("whole_run" in p for p in data["policies"])


def test_plan_names_the_field_of_an_invalid_spec(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.csv", n=200, seconds=60)
    bad = _pd("broken", 2, "auto")
    bad["spec"]["autoscaling"]["minReplicas"] = 9
    result = _plan("-f", _write(tmp_path / "bad.yaml", bad), "--trace", str(trace))
    assert result.exit_code != 0
    assert "invalid PhoenixDeployment broken" in result.output
    assert "minReplicas" in result.output

    typo = _pd("typo", 2)
    typo["spec"]["batching"]["maxQueueDelayMicrosecond"] = 5
    result = _plan("-f", _write(tmp_path / "typo.yaml", typo), "--trace", str(trace))
    assert result.exit_code != 0 and "maxQueueDelayMicrosecond" in result.output


def test_plan_rejects_files_it_cannot_simulate(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.csv", n=200, seconds=60)
    empty = tmp_path / "cm.yaml"
    empty.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    result = _plan("-f", str(empty), "--trace", str(trace))
    assert result.exit_code != 0 and "no PhoenixDeployment" in result.output

    two_classes = _pd("two-classes", 2, priority={"defaultClass": "standard", "classes": CLASSES[:2]})
    result = _plan("-f", _write(tmp_path / "c.yaml", two_classes), "--trace", str(trace))
    assert result.exit_code != 0
    assert "spec.priority.classes" in result.output and "bulk" in result.output

    zero = _pd("zero", 0)
    result = _plan("-f", _write(tmp_path / "z.yaml", zero), "--trace", str(trace))
    assert result.exit_code != 0 and "spec.triton.replicas" in result.output


def test_batcher_config_renders_the_specs_triton_batching() -> None:
    spec = PhoenixDeploymentSpec.model_validate(
        _pd(
            "x",
            2,
            batching={
                "preferredBatchSizes": [8, 4],
                "maxQueueDelayMicroseconds": 1500,
                "bounds": {"maxInstanceCount": 2},
            },
        )["spec"]
        | {
            "model": {
                "name": "m",
                "backend": "python",
                "maxBatchSize": 16,
                "instanceCount": 2,
                "repository": {"uri": "s3://m/m"},
            }
        }
    )
    cfg = batcher_config(spec)
    assert (cfg.max_batch_size, cfg.preferred_batch_sizes, cfg.max_queue_delay_us, cfg.instance_count) == (
        16,
        (4, 8),
        1500,
        2,
    )
    assert (cfg.priority_levels, cfg.default_priority_level) == (3, 2)
    assert cfg.policy_for(3).default_timeout_us == 30_000_000 and cfg.policy_for(3).timeout_action == "REJECT"
    assert cfg.policy_for(1).default_timeout_us == 0

    plain = PhoenixDeploymentSpec.model_validate(
        {k: v for k, v in _pd("y", 1)["spec"].items() if k != "priority"}
        | {"batching": {"enabled": False, "preferredBatchSizes": [4], "maxQueueDelayMicroseconds": 100}}
    )
    cfg = batcher_config(plain)
    assert cfg.priority_levels == 0 and cfg.preferred_batch_sizes == () and cfg.max_queue_delay_us == 0


def test_the_load_test_finds_a_blocking_replicas_capacity() -> None:
    """A batch of 8 takes 0.1 + 0.01 x 8 s on one instance: at most 44.4 req/s. The ramp finds
    the highest rate the replica serves within the target: near that ceiling (a 2-minute step
    cannot tell a 2 % overload, whose queue adds about a second by its end, from none)."""
    cost = BlockingBatchCost(0.1, 0.01)
    batching = BatcherConfig(max_batch_size=8, preferred_batch_sizes=(8,), max_queue_delay_us=5000)
    result = load_test_replica(cost, batching, [(100, 1)], 3.0, step_s=120.0, start_rps=4.0)
    assert 0.8 * 44.4 <= result.requests_per_second <= 1.05 * 44.4
    passed = [s.offered_rps for s in result.steps if s.passed]
    failed = [s.offered_rps for s in result.steps if not s.passed]
    assert result.requests_per_second == max(passed) and failed and min(failed) > max(passed)
    assert all(s.ttft_p95_s > 3.0 for s in result.steps if not s.passed)
    # Past the cliff the replica runs full batches back to back: 8 per 0.18 s. Saturation is
    # never below the capacity (the short steps can pass a rate a little above the ceiling).
    most = max(s.throughput_rps for s in result.steps)
    assert 0.97 * 44.4 <= most <= 44.6
    assert result.saturation_rps == max(most, result.requests_per_second)
    with pytest.raises(ValueError, match="cannot serve even 100 req/s"):
        load_test_replica(cost, batching, [(100, 1)], 3.0, step_s=60.0, start_rps=100.0)


def test_the_calibration_weighs_a_prompt_token_as_the_engine_costs_it() -> None:
    """The two halves' load tests of the shipped Azure mix give a prompt token's cost relative to
    a generated one. Checked against an independent estimate: a least-squares fit of the engine's
    own per-request cost (GPU-seconds at full load) on the two token counts."""
    profile = load_profile(DEFAULT_PROFILE)
    cost = LLMEngineCost(profile)
    workload = build_workload(WorkloadOptions(quick=True), dict(profile.classes))
    mix = token_mix(workload, cost)
    result = calibrate_replica(cost, profile.batching, mix, 3.0, step_s=300.0)
    answer_heavy, prompt_heavy = result.halves
    assert answer_heavy.output_tokens > prompt_heavy.output_tokens
    assert answer_heavy.prompt_tokens < prompt_heavy.prompt_tokens
    pairs = np.asarray(mix, dtype=float)
    work = np.array([cost.service_time(p, o, p * p) for p, o in pairs])
    design = np.column_stack([np.ones(len(pairs)), pairs[:, 0], pairs[:, 1]])
    _, per_prompt, per_output = np.linalg.lstsq(design, work, rcond=None)[0]
    assert result.prompt_token_weight is not None
    assert result.prompt_token_weight == pytest.approx(per_prompt / per_output, rel=0.25)
    # The default guess (0.2) is nowhere near it on this engine and mix.
    assert abs(result.prompt_token_weight - 0.2) > 0.05
    # A mix of one request shape has no halves to tell the costs apart.
    uniform = calibrate_replica(cost, profile.batching, [(1000, 200)] * 8, 3.0, step_s=300.0)
    assert uniform.prompt_token_weight is None and uniform.halves == ()


def test_plan_calibrate_prints_the_block_for_the_spec_and_writes_json(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.csv")
    out = tmp_path / "cal.json"
    result = _plan("--calibrate", "--trace", str(trace), "--quick", "--json", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    capacity = data["replica_capacity"]
    passed = [s["offered_rps"] for s in data["steps"] if s["passed"]]
    assert capacity["requestsPerSecond"] == pytest.approx(max(passed), abs=1e-3)
    assert any(not s["passed"] for s in data["steps"])
    # The mix is the trace's (prompts 200-2000, answers 20-300 tokens).
    assert 900 < capacity["promptTokens"] < 1300 and 130 < capacity["outputTokens"] < 180
    snippet = result.output[result.output.index("spec:") :].split("\n\n")[0]
    pasted = yaml.safe_load(snippet)["spec"]["autoscaling"]["replicaCapacity"]
    assert pasted == capacity
    # Pasted into a spec, it is what the control loop starts from.
    doc = _pd("calibrated", 2, "auto")
    doc["spec"]["autoscaling"]["replicaCapacity"] = pasted
    params = PolicyParams.from_spec(PhoenixDeploymentSpec.model_validate(doc["spec"]))
    assert params.initial_capacity_rps == capacity["requestsPerSecond"] and params.has_capacity_mix
    # The saturation the steps measured, and the weight from the two halves' load tests.
    throughput = max(s["throughput_rps"] for s in data["steps"])
    assert capacity["saturationRequestsPerSecond"] == pytest.approx(max(throughput, max(passed)), abs=1e-3)
    assert params.max_utilization == pytest.approx(
        capacity["saturationRequestsPerSecond"] / capacity["requestsPerSecond"]
    )
    assert len(data["halves"]) == 2 and "prompt-heavy half" in result.output
    assert params.prompt_token_weight == capacity.get("promptTokenWeight", 0.2)


def test_plan_needs_a_file_unless_it_calibrates() -> None:
    result = _plan()
    assert result.exit_code == 2 and "--calibrate" in result.output
