"""Workloads: trace replay with time compression, slicing, synthetic generators, priority mix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phoenix_operator.sim.workloads import (
    AZURE_CONV_TOKENS,
    assign_classes,
    burst_workload,
    diurnal_workload,
    fit_tokens,
    read_trace,
    trace_workload,
)

SHARED_TRACE = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "azure-llm-2023-conv.csv"


@pytest.fixture()
def trace(tmp_path: Path) -> Path:
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(120):  # one request per second for two minutes, 100 ns timestamps
        rows.append(f"2023-11-16 18:{15 + i // 60:02d}:{i % 60:02d}.1234567,{100 + i},{10 + i % 7}")
    path = tmp_path / "trace.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_read_trace_parses_timestamps_relative_to_the_first(trace: Path) -> None:
    t, p, o = read_trace(trace)
    assert len(t) == 120
    assert t[0] == 0.0
    assert t[-1] == pytest.approx(119.0)
    assert p[5] == 105 and o[5] == 15


def test_multiplier_compresses_time(trace: Path) -> None:
    base = trace_workload(trace)
    fast = trace_workload(trace, multiplier=4.0)
    assert len(fast.arrivals) == len(base.arrivals)
    assert fast.duration_s == pytest.approx(base.duration_s / 4)
    assert fast.mean_rate == pytest.approx(base.mean_rate * 4)
    assert fast.arrivals[8].time_s == pytest.approx(2.0)
    assert [a.prompt_tokens for a in fast.arrivals] == [a.prompt_tokens for a in base.arrivals]


def test_window_slices_the_trace_before_compression(trace: Path) -> None:
    w = trace_workload(trace, multiplier=2.0, window=(30.0, 90.0))
    assert len(w.arrivals) == 60
    assert w.arrivals[0].time_s == pytest.approx(0.0)
    assert w.arrivals[0].prompt_tokens == 130
    assert w.duration_s == pytest.approx(30.0)
    with pytest.raises(ValueError):
        trace_workload(trace, window=(500.0, 600.0))


def test_bad_trace_columns_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,prompt\n1,2\n")
    with pytest.raises(ValueError, match="need columns"):
        read_trace(bad)


def test_numeric_timestamps_are_seconds(tmp_path: Path) -> None:
    path = tmp_path / "num.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n10.5,1,1\n12.0,2,2\n11.0,3,3\n")
    t, p, _ = read_trace(path)
    assert list(t) == [0.0, 0.5, 1.5]
    assert list(p) == [1, 3, 2]


def test_priority_mix_is_deterministic_and_close_to_its_shares() -> None:
    a = assign_classes(20_000, seed=5)
    b = assign_classes(20_000, seed=5)
    c = assign_classes(20_000, seed=6)
    assert a == b
    assert a != c
    names = [k for k, _ in a]
    assert names.count("urgent") / len(names) == pytest.approx(0.10, abs=0.01)
    assert names.count("standard") / len(names) == pytest.approx(0.60, abs=0.015)
    assert dict(a)["urgent"] == 1 and dict(a)["bulk"] == 3
    with pytest.raises(ValueError):
        assign_classes(10, seed=0, mix={"vip": 1.0})


def test_diurnal_rate_follows_the_cycle() -> None:
    w = diurnal_workload(3600.0, mean_rate=10.0, amplitude=0.5, seed=1)
    assert w.mean_rate == pytest.approx(10.0, rel=0.05)
    t = np.array([a.time_s for a in w.arrivals])
    trough = np.count_nonzero(t < 600) / 600
    peak = np.count_nonzero((t >= 1500) & (t < 2100)) / 600
    assert peak > 2.2 * trough


def test_burst_workload_has_bursts() -> None:
    w = burst_workload(
        1200.0, base_rate=5.0, burst_factor=4.0, burst_every_s=300.0, burst_length_s=60.0, seed=2
    )
    t = np.array([a.time_s for a in w.arrivals])
    in_burst = np.mod(t, 300.0) >= 240.0
    assert np.count_nonzero(in_burst) / (4 * 60) == pytest.approx(20.0, rel=0.15)
    assert np.count_nonzero(~in_burst) / (4 * 240) == pytest.approx(5.0, rel=0.15)
    assert w.peak_rate(60.0) > 3 * w.mean_rate / 1.6


def test_token_fit_recovers_lognormal_parameters() -> None:
    rng = np.random.default_rng(0)
    p, o = AZURE_CONV_TOKENS.sample(50_000, rng)
    fit = fit_tokens(p, o)
    assert fit.prompt_mu == pytest.approx(AZURE_CONV_TOKENS.prompt_mu, abs=0.03)
    assert fit.output_sigma == pytest.approx(AZURE_CONV_TOKENS.output_sigma, abs=0.03)


@pytest.mark.skipif(not SHARED_TRACE.is_file(), reason="shared Azure trace not present")
def test_shared_azure_trace_matches_its_readme_and_the_fitted_defaults() -> None:
    t, p, o = read_trace(SHARED_TRACE)
    assert len(t) == 19_366
    assert t[-1] == pytest.approx(3501.7, abs=0.1)
    fit = fit_tokens(p, o)
    assert fit.prompt_mu == pytest.approx(AZURE_CONV_TOKENS.prompt_mu, abs=1e-3)
    assert fit.output_mu == pytest.approx(AZURE_CONV_TOKENS.output_mu, abs=1e-3)
    assert int(np.median(p)) == 1020 and int(np.median(o)) == 129
