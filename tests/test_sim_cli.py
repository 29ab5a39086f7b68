"""`phoenix bench` end to end on a small trace: table, JSON layout, plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from phoenix_operator.cli import _COMMANDS, main


def _trace(path: Path, n: int = 2400, seconds: float = 600.0) -> Path:
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, seconds, n))
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    rows += [f"{x:.6f},{int(rng.integers(200, 2000))},{int(rng.integers(20, 300))}" for x in t]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_bench_is_a_phoenix_subcommand() -> None:
    assert _COMMANDS["bench"] == "phoenix_operator.sim.cli:bench"


def test_bench_writes_table_json_and_plots(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.csv")
    out = tmp_path / "out"
    report = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "--trace",
            str(trace),
            "--multiplier",
            "2",
            "--quick",
            "--window",
            "0,600",
            "--policies",
            "phoenix,oracle,hpa,keda,llmd,static-avg,static-peak",
            "--out",
            str(out),
            "--json",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "static-peak" in result.output
    assert "not registered" not in result.output
    data = json.loads(report.read_text())
    assert set(data) == {"workload", "slo_ttft_s", "policies"}
    assert data["slo_ttft_s"] == 3.0
    assert data["workload"]["requests"] == 2400
    assert data["workload"]["multiplier"] == 2.0
    names = [p["name"] for p in data["policies"]]
    assert names == ["phoenix", "oracle", "hpa", "keda", "llmd", "static-avg", "static-peak"]
    for p in data["policies"]:
        for key in (
            "slo_attainment",
            "urgent_slo_attainment",
            "ttft_p50_s",
            "ttft_p95_s",
            "ttft_p99_s",
            "gpu_hours",
            "scaling_actions",
            "batching_changes",
        ):
            assert key in p
        assert 0.0 <= p["slo_attainment"] <= 1.0
        assert 0.0 <= p["urgent_slo_attainment"] <= 1.0
        assert p["gpu_hours"] > 0
    static = {p["name"]: p for p in data["policies"]}
    assert static["static-avg"]["scaling_actions"] == 0
    assert static["static-peak"]["gpu_hours"] >= static["static-avg"]["gpu_hours"]
    assert static["oracle"]["slo_attainment"] >= 0.99
    assert (out / "ttft_p95.png").stat().st_size > 10_000
    assert (out / "replicas.png").stat().st_size > 10_000


def test_bench_refuses_unknown_policies(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.csv", n=50, seconds=60.0)
    result = CliRunner().invoke(main, ["bench", "--trace", str(trace), "--policies", "nope", "--no-plots"])
    assert result.exit_code != 0
    assert "unknown policies" in result.output
