"""Workloads: trace replay with time compression, slicing, synthetic generators, priority mix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phoenix_operator.data import azure_trace, mooncake_trace
from phoenix_operator.sim.workloads import (
    AZURE_CONV_TOKENS,
    DayShape,
    PeakShape,
    assign_classes,
    burst_workload,
    diurnal_workload,
    fit_tokens,
    peak_workload,
    read_prefix_blocks,
    read_trace,
    trace_format_of,
    trace_workload,
)

SHIPPED_TRACE = azure_trace()


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


def test_shipped_azure_trace_matches_its_readme_and_the_fitted_defaults() -> None:
    t, p, o = read_trace(SHIPPED_TRACE)
    assert len(t) == 19_366
    assert t[-1] == pytest.approx(3501.7, abs=0.1)
    fit = fit_tokens(p, o)
    assert fit.prompt_mu == pytest.approx(AZURE_CONV_TOKENS.prompt_mu, abs=1e-3)
    assert fit.output_mu == pytest.approx(AZURE_CONV_TOKENS.output_mu, abs=1e-3)
    assert int(np.median(p)) == 1020 and int(np.median(o)) == 129


# --------------------------------------------------------------------------------------------
# The peak-hour scenario: normal load, a smooth rise, the peak held


def test_peak_shape_rises_smoothly_and_integrates_to_trace_time() -> None:
    shape = PeakShape(peak=6.0, base=1.0, lead_in_s=100.0, ramp_s=200.0, hold_s=300.0)
    assert shape.duration_s == 600.0 and shape.measured_window_s == (300.0, 600.0)
    m = shape.multiplier(np.array([0.0, 100.0, 200.0, 300.0, 450.0]))
    assert list(m) == pytest.approx([1.0, 1.0, 3.5, 6.0, 6.0])
    # Half a cosine: no kink where the rise starts or ends.
    eps = 1e-3
    assert shape.multiplier(100.0 + eps) - 1.0 < 1e-5 and 6.0 - shape.multiplier(300.0 - eps) < 1e-5
    grid = np.linspace(0.0, 600.0, 60_001)
    numeric = np.concatenate(
        [[0.0], np.cumsum((shape.multiplier(grid[1:]) + shape.multiplier(grid[:-1])) / 2 * 0.01)]
    )
    assert shape.trace_seconds(grid) == pytest.approx(numeric, abs=1e-3)
    assert float(shape.trace_seconds(600.0)) == pytest.approx(100 + 200 * 3.5 + 300 * 6)
    u = np.array([0.0, 50.0, 400.0, 2000.0])
    assert shape.trace_seconds(shape.warp(u)) == pytest.approx(u, abs=1e-2)
    with pytest.raises(ValueError):
        PeakShape(peak=0.5, base=1.0)
    with pytest.raises(ValueError):
        PeakShape(peak=2.0, hold_s=0.0)


def test_day_shape_is_one_diurnal_cycle_that_integrates_to_trace_time() -> None:
    shape = DayShape(peak=4.0, trough=0.25, day_s=1000.0)
    assert shape.duration_s == 1000.0 and shape.measured_window_s == (0.0, 1000.0) and shape.lead_in_s == 0.0
    m = shape.multiplier(np.array([0.0, 250.0, 500.0, 750.0, 1000.0]))
    assert list(m) == pytest.approx([1.0, 2.5, 4.0, 2.5, 1.0])  # night, shoulder, peak, shoulder, night
    grid = np.linspace(0.0, 1000.0, 100_001)
    numeric = np.concatenate(
        [[0.0], np.cumsum((shape.multiplier(grid[1:]) + shape.multiplier(grid[:-1])) / 2 * 0.01)]
    )
    assert shape.trace_seconds(grid) == pytest.approx(numeric, abs=1e-3)
    # The mean multiplier over a day is the average of night and peak.
    assert float(shape.trace_seconds(1000.0)) == pytest.approx(1000.0 * (1.0 + 4.0) / 2)
    u = np.array([0.0, 10.0, 1200.0, 2499.0])
    assert shape.trace_seconds(shape.warp(u)) == pytest.approx(u, abs=1e-2)
    assert shape.to_dict() == {"kind": "day", "peak_multiplier": 4.0, "trough": 0.25, "day_s": 1000.0}
    bad_shapes = (
        {"peak": 0.0},
        {"peak": 2.0, "trough": 0.0},
        {"peak": 2.0, "trough": 1.5},
        {"peak": 2.0, "day_s": 0},
    )
    for bad in bad_shapes:
        with pytest.raises(ValueError):
            DayShape(**bad)  # type: ignore[arg-type]


def test_day_workload_is_quiet_at_night_and_busy_in_the_afternoon(trace: Path) -> None:
    shape = DayShape(peak=4.0, trough=0.25, day_s=1200.0)
    w = peak_workload(trace, shape, seed=2)
    t = np.array([a.time_s for a in w.arrivals])
    assert w.name.endswith("-day") and w.duration_s == 1200.0
    assert w.measured == (0.0, 1200.0) and w.summary()["shape"]["kind"] == "day"
    assert len(w.arrivals) == pytest.approx(float(shape.trace_seconds(1200.0)), abs=2)
    night = np.count_nonzero(t < 100.0) + np.count_nonzero(t >= 1100.0)
    afternoon = np.count_nonzero((t >= 550.0) & (t < 650.0)) * 2
    expected = float(shape.multiplier(600.0) / shape.multiplier(50.0))
    assert afternoon / night == pytest.approx(expected, rel=0.15)


def test_peak_workload_loops_the_trace_at_the_local_rate(trace: Path) -> None:
    # 120 requests over 119 s, looped: 1 req/s at x1 for 60 s, a 60 s rise, x3 for 120 s.
    shape = PeakShape(peak=3.0, base=1.0, lead_in_s=60.0, ramp_s=60.0, hold_s=120.0)
    w = peak_workload(trace, shape, seed=4)
    t = np.array([a.time_s for a in w.arrivals])
    assert np.all(np.diff(t) >= 0) and t[-1] < w.duration_s == 240.0
    assert len(w.arrivals) == pytest.approx(float(shape.trace_seconds(240.0)), abs=2)
    assert np.count_nonzero(t < 60.0) == pytest.approx(60, abs=1)
    assert np.count_nonzero(t >= 120.0) / 120.0 == pytest.approx(3.0, rel=0.03)
    # The trace's own requests in order, looped: token counts repeat with the trace's period.
    prompts = [a.prompt_tokens for a in w.arrivals]
    assert prompts[:120] == list(range(100, 220)) and prompts[120:240] == list(range(100, 220))
    assert w.measured_window_s == (120.0, 240.0) and w.measured == (120.0, 240.0)
    assert w.start_window_s == (0.0, 60.0)
    summary = w.summary()
    assert summary["shape"]["kind"] == "peak-hour" and summary["shape"]["trace_loops"] > 4
    assert summary["measured_window_s"] == [120.0, 240.0] and summary["multiplier"] == 3.0
    # Every replayed request draws its own class: the loops do not repeat the mix.
    assert [a.klass for a in w.arrivals[:120]] != [a.klass for a in w.arrivals[120:240]]


def test_peak_workload_loops_a_slice(trace: Path) -> None:
    shape = PeakShape(peak=2.0, base=2.0, lead_in_s=0.0, ramp_s=0.0, hold_s=60.0)
    w = peak_workload(trace, shape, window=(30.0, 60.0))
    prompts = [a.prompt_tokens for a in w.arrivals]
    assert prompts == list(range(130, 160)) * 4  # 30 s of trace looped 4 times at x2
    assert w.window_s == (30.0, 60.0)
    with pytest.raises(ValueError):
        peak_workload(trace, shape, window=(500.0, 600.0))


def test_a_plain_replay_is_measured_over_the_whole_run(trace: Path) -> None:
    w = trace_workload(trace, multiplier=2.0)
    assert w.measured_window_s is None and w.measured == (0.0, w.duration_s)
    assert w.start_window_s is None and w.summary()["shape"] is None


def test_mooncake_jsonl_is_read_by_suffix_or_by_format(tmp_path: Path) -> None:
    rows = [
        '{"timestamp": 3000, "input_length": 700, "output_length": 20, "hash_ids": [0, 1]}',
        '{"timestamp": 1000, "input_length": 500, "output_length": 10, "hash_ids": [0]}',
        "",
        '{"timestamp": 2500, "input_length": 600, "output_length": 15, "hash_ids": [2]}',
    ]
    path = tmp_path / "mc.jsonl"
    path.write_text("\n".join(rows) + "\n")
    t, p, o = read_trace(path)
    assert list(t) == [0.0, 1.5, 2.0]  # milliseconds -> seconds from the first request, sorted
    assert list(p) == [500, 600, 700] and list(o) == [10, 15, 20]
    renamed = tmp_path / "mc.txt"
    renamed.write_text(path.read_text())
    assert trace_format_of(renamed) == "azure"
    assert list(read_trace(renamed, "mooncake")[1]) == [500, 600, 700]
    with pytest.raises(ValueError, match="unknown trace format"):
        read_trace(path, "parquet")


def test_a_bad_mooncake_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: need a JSON object with timestamp"):
        read_trace(path)


def test_shipped_mooncake_trace_replays_through_the_peak_shape() -> None:
    t, p, o = read_trace(mooncake_trace())
    assert len(t) == 12031 and t[0] == 0.0 and np.all(np.diff(t) >= 0)
    assert p.min() >= 1 and o.min() >= 1
    wl = peak_workload(mooncake_trace(), PeakShape(peak=2.0, lead_in_s=60, ramp_s=60, hold_s=60))
    assert wl.name == "mooncake-fast25-conversation-peak" and len(wl.arrivals) > 0
    assert {a.prompt_tokens for a in wl.arrivals} <= set(p.tolist())


def test_mooncake_requests_keep_their_own_prefix_blocks_through_the_peak_shape() -> None:
    """Each replayed request carries its trace row's hash_ids (rows matched on their tokens), so the
    engine's prefix cache sees the trace's real sharing; the Azure trace has none to carry."""
    _, p, o = read_trace(mooncake_trace())
    blocks = read_prefix_blocks(mooncake_trace())
    by_tokens: dict[tuple[int, int], set[tuple[int, ...]]] = {}
    for prompt, output, ids in zip(p.tolist(), o.tolist(), blocks, strict=True):
        by_tokens.setdefault((prompt, output), set()).add(ids)
    shape = PeakShape(peak=2.0, lead_in_s=60, ramp_s=60, hold_s=60)
    wl = peak_workload(mooncake_trace(), shape, phase=0.3, part="test")
    assert wl.arrivals and all(a.prefix_blocks for a in wl.arrivals)
    assert all(a.prefix_blocks in by_tokens[(a.prompt_tokens, a.output_tokens)] for a in wl.arrivals)
    # Conversations share their system prompt: some block is used by more than one request.
    first_blocks = [a.prefix_blocks[0] for a in wl.arrivals]
    assert len(set(first_blocks)) < len(first_blocks)
    replay = trace_workload(mooncake_trace(), multiplier=50.0, window=(0.0, 60.0))
    assert [a.prefix_blocks for a in replay.arrivals] == blocks[: len(replay.arrivals)]
    azure = peak_workload(SHIPPED_TRACE, shape)
    assert not any(a.prefix_blocks for a in azure.arrivals)


def test_a_phase_offset_replays_the_same_requests_from_elsewhere(trace: Path) -> None:
    shape = PeakShape(peak=1.0, lead_in_s=0, ramp_s=0, hold_s=120)
    base = peak_workload(trace, shape)
    shifted = peak_workload(trace, shape, phase=0.5)
    assert shifted.shape is not None and shifted.shape["phase"] == 0.5
    # One loop of the trace either way: the same requests, started half-way through.
    assert sorted(a.prompt_tokens for a in base.arrivals) == sorted(a.prompt_tokens for a in shifted.arrivals)
    assert base.arrivals[0].prompt_tokens == 100
    assert shifted.arrivals[0].prompt_tokens == 160
    with pytest.raises(ValueError, match="phase"):
        peak_workload(trace, shape, phase=1.0)


def test_training_and_held_out_parts_are_disjoint_alternate_blocks(trace: Path) -> None:
    shape = PeakShape(peak=1.0, lead_in_s=0, ramp_s=0, hold_s=60)
    train = peak_workload(trace, shape, part="train", block_s=30.0)
    test = peak_workload(trace, shape, part="test", block_s=30.0)
    train_prompts = [a.prompt_tokens for a in train.arrivals]
    test_prompts = [a.prompt_tokens for a in test.arrivals]
    # Blocks 0 and 2 (seconds 0-29, 60-89) train; 1 and 3 (30-59, 90-119) are held out.
    assert train_prompts == [*range(100, 130), *range(160, 190)]
    assert test_prompts == [*range(130, 160), *range(190, 220)]
    assert not set(train_prompts) & set(test_prompts)
    # Joined end to end: the held-out replay has no 30 s hole where the training block was.
    gaps = np.diff([a.time_s for a in test.arrivals])
    assert gaps.max() < 1.5
