"""`phoenix bench` end to end on a small trace: table, JSON layout, plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner

from phoenix_operator.cli import COMMANDS, main


def _trace(path: Path, n: int = 2400, seconds: float = 600.0) -> Path:
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, seconds, n))
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    rows += [f"{x:.6f},{int(rng.integers(200, 2000))},{int(rng.integers(20, 300))}" for x in t]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_bench_is_a_phoenix_subcommand() -> None:
    assert COMMANDS["bench"] == "phoenix_operator.sim.cli:bench"


FIGURES = (
    "slo_attainment",
    "urgent_slo_attainment",
    "ttft_p50_s",
    "ttft_p95_s",
    "ttft_p99_s",
    "gpu_hours",
    "scaling_actions",
    "batching_changes",
)


def _bench(tmp_path: Path, *args: str) -> tuple[str, dict[str, Any]]:
    report = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", *args, "--json", str(report)])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split()), json.loads(report.read_text())  # unwrapped


def test_bench_writes_table_json_and_plots(tmp_path: Path) -> None:
    """The default scenario (a peak hour arriving), shortened: figures over the peak held,
    means over replications with 95 % intervals, knobs tuned on the training blocks."""
    trace = _trace(tmp_path / "t.csv")
    out = tmp_path / "out"
    output, data = _bench(
        tmp_path,
        "--trace", str(trace), "--multiplier", "6", "--lead-in", "30", "--ramp", "120", "--hold", "150",
        "--quick", "--replications", "2", "--out", str(out),
    )  # fmt: skip
    assert "not registered" not in output
    assert "table measured over the peak, 150-300 s; autoscalers start at" in output
    assert "2 replication(s)" in output and "work-conservation lower bound" in output
    assert set(data) == {"workload", "slo_ttft_s", "policies", "tuning"}
    assert data["slo_ttft_s"] == 3.0
    wl = data["workload"]
    assert wl["multiplier"] == 6.0 and wl["duration_s"] == 300.0
    assert wl["measured_window_s"] == [150.0, 300.0]
    assert wl["shape"]["kind"] == "peak-hour" and wl["shape"]["ramp_s"] == 120.0
    assert wl["replications"] == 2 and len(wl["replication_phases"]) == 2
    assert wl["replication_phases"][0] == 0.0 and 0.0 < wl["replication_phases"][1] < 1.0
    assert wl["bound_gpu_hours"] > 0 and len(wl["bound_gpu_hours_ci95"]) == 2
    # Normal load first: the autoscalers start smaller than the fleet sized for the peak's average.
    assert wl["autoscaler_start_replicas"] < wl["static_avg_replicas"]
    names = [p["name"] for p in data["policies"]]
    assert names == [
        "phoenix", "phoenix-tuned", "phoenix-uncalibrated", "oracle", "hpa", "keda", "llmd-slo",
        "dynamo-planner", "static-best", "static-avg",
    ]  # fmt: skip
    for p in data["policies"]:
        assert all(key in p and f"{key}_ci95" in p for key in FIGURES)
        assert all(key in p["whole_run"] for key in FIGURES[:6])  # scaling/batching: whole run only
        assert 0.0 <= p["slo_attainment"] <= 1.0
        assert 0.0 <= p["urgent_slo_attainment"] <= 1.0
        assert 0 < p["gpu_hours"] < p["whole_run"]["gpu_hours"]  # the window is part of the run
        assert p["window_s"] == [150.0, 300.0] and p["whole_run"]["window_s"] == [0.0, 300.0]
        low, high = p["gpu_hours_ci95"]
        assert low <= p["gpu_hours"] <= high
    by_name = {p["name"]: p for p in data["policies"]}
    assert by_name["static-avg"]["scaling_actions"] == 0
    assert by_name["static-best"]["scaling_actions"] == 0
    # The oracle meets the judged criterion for no more than the smallest fixed fleet that does.
    assert by_name["oracle"]["slo_attainment"] >= 0.99
    assert by_name["oracle"]["gpu_hours"] <= by_name["static-best"]["gpu_hours"] + 1e-9
    # Tuned on the training blocks: the chosen knobs are among the candidates tried there.
    tuning = data["tuning"]
    assert set(tuning) == {"phoenix-tuned", "hpa", "keda", "llmd-slo", "dynamo-planner"}
    for t in tuning.values():
        assert t["chosen"] in [c["knobs"] for c in t["candidates"]] and len(t["candidates"]) <= 4
    assert (out / "ttft_p95.png").stat().st_size > 10_000
    assert (out / "replicas.png").stat().st_size > 10_000
    assert (out / "cost_vs_attainment.png").stat().st_size > 10_000


def test_bench_replays_a_mooncake_trace(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0, 600_000, 1500)).astype(int)  # milliseconds
    lines = [
        f'{{"timestamp": {x}, "input_length": {int(rng.integers(200, 4000))}, '
        f'"output_length": {int(rng.integers(20, 300))}, "hash_ids": [0]}}'
        for x in t
    ]
    trace = tmp_path / "mc.jsonl"
    trace.write_text("\n".join(lines) + "\n")
    _, data = _bench(
        tmp_path,
        "--trace", str(trace), "--multiplier", "4", "--lead-in", "30", "--ramp", "60", "--hold", "90",
        "--quick", "--replications", "1", "--policies", "static-avg,static-best", "--no-plots",
    )  # fmt: skip
    wl = data["workload"]
    assert wl["source"] == str(trace) and wl["name"] == "mc-peak"
    assert 200 <= wl["mean_prompt_tokens"] <= 4000
    assert [p["name"] for p in data["policies"]] == ["static-avg", "static-best"]  # as asked
    assert "tuning" not in data  # nothing to tune among fixed fleets


def test_cold_peak_scenario_replays_the_trace_from_the_first_second(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.csv")
    output, data = _bench(
        tmp_path,
        "--trace", str(trace), "--scenario", "cold-peak", "--multiplier", "2", "--quick", "--window", "0,600",
        "--policies", "oracle,static-avg,static-peak", "--no-plots", "--replications", "1",
    )  # fmt: skip
    wl = data["workload"]
    assert wl["requests"] == 2400 and wl["multiplier"] == 2.0 and wl["shape"] is None
    assert wl["measured_window_s"] == [0.0, wl["duration_s"]]
    assert wl["autoscaler_start_replicas"] == wl["static_avg_replicas"]
    assert "table measured over the whole run" in output
    assert all("whole_run" not in p for p in data["policies"])  # the window is the whole run
    assert [p["name"] for p in data["policies"]] == ["oracle", "static-avg", "static-peak"]


def test_bench_refuses_unknown_policies(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.csv", n=50, seconds=60.0)
    result = CliRunner().invoke(main, ["bench", "--trace", str(trace), "--policies", "nope", "--no-plots"])
    assert result.exit_code != 0
    assert "unknown policies" in result.output


def test_day_scenario_measures_the_whole_day(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.csv", n=1200, seconds=600.0)
    output, data = _bench(
        tmp_path,
        "--trace", str(trace), "--scenario", "day", "--multiplier", "8", "--quick",
        "--policies", "phoenix,static-best", "--no-plots", "--replications", "1",
    )  # fmt: skip
    wl = data["workload"]
    assert wl["shape"]["kind"] == "day" and wl["shape"]["day_s"] == 21_600.0  # --quick: 6 hours
    assert wl["measured_window_s"] == [0.0, 21_600.0] and wl["duration_s"] == 21_600.0
    assert "a day of 6 h" in output and "table measured over the whole day" in output
    by_name = {p["name"]: p for p in data["policies"]}
    assert by_name["static-best"]["scaling_actions"] == 0
    # Quiet nights: the autoscaler scales down and back up within the day.
    assert by_name["phoenix"]["scaling_actions"] >= 2
    assert by_name["phoenix"]["slo_attainment"] >= 0.95
    assert by_name["phoenix"]["gpu_hours"] < by_name["static-best"]["gpu_hours"]


def test_sweep_runs_the_benchmark_at_each_value(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.csv")
    out = tmp_path / "out"
    report = tmp_path / "sweep.json"
    result = CliRunner().invoke(
        main,
        [
            "bench", "--trace", str(trace), "--lead-in", "30", "--ramp", "60", "--hold", "120", "--quick",
            "--replications", "2", "--policies", "static-avg,static-peak", "--out", str(out),
            "sweep", "multiplier", "3,9", "--json", str(report),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["parameter"] == "multiplier" and data["values"] == [3.0, 9.0]
    low, high = data["points"]
    assert low["workload"]["multiplier"] == 3.0 and high["workload"]["multiplier"] == 9.0
    assert low["workload"]["replications"] == 2 and high["workload"]["replications"] == 2
    # Three times the load: a bigger fleet sized for it, more GPU-hours, a higher bound.
    assert high["workload"]["static_avg_replicas"] > low["workload"]["static_avg_replicas"]
    assert high["workload"]["bound_gpu_hours"] > 2 * low["workload"]["bound_gpu_hours"]
    gpu = {p["name"]: p["gpu_hours"] for p in high["policies"]}
    assert gpu["static-peak"] >= gpu["static-avg"]
    assert "Sweep over the peak multiplier" in result.output
    assert (out / "sweep_multiplier.png").stat().st_size > 10_000


def test_sweep_refuses_values_that_are_not_numbers(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.csv", n=50, seconds=60.0)
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "--trace", str(trace), "sweep", "multiplier", "4,x"])
    assert result.exit_code != 0 and "use numbers separated by commas" in result.output
    result = runner.invoke(main, ["bench", "--trace", str(trace), "sweep", "startup", "0,60"])
    assert result.exit_code != 0 and "startup must be positive" in result.output
    result = runner.invoke(main, ["bench", "--trace", str(trace), "--scenario", "day", "sweep", "ramp", "60"])
    assert result.exit_code != 0 and "peak-hour only" in result.output
