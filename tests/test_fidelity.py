"""Simulator fidelity: the harness's parts, the missed-wake-up model, and a small real run.

The real run sends a few seconds per rate, twice, through a real tritonserver and the simulator
and fails when the simulator's batching drifts from Triton's. Its bounds: mean batch size and mean
latency within 10 %, p95 latency within 15 % of the 95 % confidence interval of Triton's own p95 —
at this size a p95 rests on a few hundred requests, and identical arrival streams replayed on this
2-core machine gave real p95s 12 % apart (docs/fidelity.md); the 10 % p95 bound is checked on the
full run recorded there.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from phoenix_operator.cli import COMMANDS
from phoenix_operator.fidelity.calibration import fit_cost, observe_handoffs
from phoenix_operator.fidelity.cases import poisson_case, trace_case
from phoenix_operator.fidelity.comparison import (
    SimInput,
    beyond_interval,
    build_cases,
    real_figures,
    run_fidelity,
    run_sim,
)
from phoenix_operator.fidelity.config import DEFAULT_BATCHING, FidelityConfig
from phoenix_operator.fidelity.harness import RealRun, dynamic_batching_block
from phoenix_operator.fidelity.trace import Batch, Span, parse_trace
from phoenix_operator.local.models import emulated_llm_config
from phoenix_operator.sim import Arrival, BatcherConfig, BlockingBatchCost, QueuePolicy, simulate
from phoenix_operator.sim.options import default_trace
from phoenix_operator.stats import quantile, quantile_interval

MS = 1e-3
#: Priority levels on: no prefetch, so Triton's batcher forms a batch only for an idle instance.
NO_PREFETCH = BatcherConfig(max_batch_size=1, priority_levels=1, default_priority_level=1)


def _arrivals(*times_ms: float) -> list[Arrival]:
    return [Arrival(t * MS) for t in times_ms]


# --------------------------------------------------------------------------------------------
# The simulator's missed wake-up (Triton core: Payload::Execute notifies before the instance
# thread is waiting again in RateLimiter::DequeuePayload)
# --------------------------------------------------------------------------------------------
def test_a_missed_wakeup_waits_for_the_next_arrival() -> None:
    cost = BlockingBatchCost(0.020, 0.0)
    # A runs 0..20 ms; X queues during it; Y arrives at 100 ms.
    hit = simulate(_arrivals(0, 5, 100), NO_PREFETCH, cost)
    missed = simulate(_arrivals(0, 5, 100), NO_PREFETCH, cost, missed_wakeup_p=1.0)
    assert hit[1].dispatch_s == pytest.approx(0.020)
    # The batcher slept through A's end; Y's enqueue (an instance is waiting) wakes it.
    assert missed[1].dispatch_s == pytest.approx(0.100)
    # Y was queued when X was dispatched (at 100 ms) and X's end is missed too: next poll.
    assert missed[2].dispatch_s == pytest.approx(0.600)


def test_without_arrivals_a_missed_wakeup_waits_for_the_500ms_slot_poll() -> None:
    cost = BlockingBatchCost(0.020, 0.0)
    # Queue empty when A was dispatched: A's end wakes the batcher's timer wait, its slot wait
    # starts then (20 ms) and polls 500 ms later.
    recs = simulate(_arrivals(0, 5, 10), NO_PREFETCH, cost, missed_wakeup_p=1.0)
    assert recs[1].dispatch_s == pytest.approx(0.520)
    # Z was left queued when X was dispatched: the slot wait polls 500 ms after that dispatch.
    assert recs[2].dispatch_s == pytest.approx(1.020)
    # A batch longer than the poll: the empty-queue timer expired at 500 ms with X queued, so
    # the slot wait began then; the missed end (700 ms) leaves X for the poll at 1000 ms.
    long = simulate(_arrivals(0, 5), NO_PREFETCH, BlockingBatchCost(0.700, 0.0), missed_wakeup_p=1.0)
    assert long[1].dispatch_s == pytest.approx(1.000)


def test_requests_time_out_while_the_batcher_sleeps() -> None:
    policy = QueuePolicy(timeout_action="REJECT", default_timeout_us=200_000)
    cfg = BatcherConfig(
        max_batch_size=1, priority_levels=1, default_priority_level=1, default_queue_policy=policy
    )
    recs = simulate(_arrivals(0, 5), cfg, BlockingBatchCost(0.020, 0.0), missed_wakeup_p=1.0)
    # X waited past its 200 ms timeout before the poll at 520 ms: rejected, as Triton does.
    assert [r.status for r in recs] == ["ok", "timeout"]


def test_prefetch_never_misses_and_zero_probability_draws_nothing() -> None:
    prefetch = BatcherConfig(max_batch_size=1)
    assert prefetch.supports_prefetching
    recs = simulate(_arrivals(0, 5), prefetch, BlockingBatchCost(0.020, 0.0), missed_wakeup_p=1.0)
    assert recs[1].dispatch_s == pytest.approx(0.020)
    rng = np.random.default_rng(1)
    stream = [
        Arrival(float(t), priority=int(p))
        for t, p in zip(np.cumsum(rng.exponential(0.01, 400)), rng.integers(1, 3, 400), strict=True)
    ]
    cfg = DEFAULT_BATCHING
    cost = BlockingBatchCost(0.022, 0.002)
    base = [(r.dispatch_s, r.batch_id) for r in simulate(stream, cfg, cost)]
    assert base == [(r.dispatch_s, r.batch_id) for r in simulate(stream, cfg, cost, missed_wakeup_p=0.0)]
    some = [(r.dispatch_s, r.batch_id) for r in simulate(stream, cfg, cost, missed_wakeup_p=0.3, seed=4)]
    assert some == [
        (r.dispatch_s, r.batch_id) for r in simulate(stream, cfg, cost, missed_wakeup_p=0.3, seed=4)
    ]
    assert some != base


# --------------------------------------------------------------------------------------------
# Harness parts (no server)
# --------------------------------------------------------------------------------------------
def _span(rid: str, queued_ms: float, start_ms: float | None, end_ms: float | None) -> Span:
    ns = 1_000_000
    return Span(
        rid,
        int(queued_ms * ns),
        int((end_ms if end_ms is not None else queued_ms) * ns) + 50_000,
        None if start_ms is None else int(start_ms * ns),
        None if end_ms is None else int(end_ms * ns),
    )


def test_parse_trace_joins_timestamps_on_the_trace_id_and_keeps_the_request_id() -> None:
    entries = [
        {"id": 7, "timestamps": [{"name": "HTTP_RECV_START", "ns": 90}]},
        {"id": 7, "model_name": "emulated_llm", "model_version": 1, "request_id": "poisson-40#3"},
        {"id": 7, "timestamps": [{"name": "QUEUE_START", "ns": 100}]},
        {"id": 7, "timestamps": [{"name": "COMPUTE_START", "ns": 300}]},
        {"id": 7, "timestamps": [{"name": "COMPUTE_END", "ns": 900}]},
        {"id": 7, "timestamps": [{"name": "REQUEST_END", "ns": 950}]},
        {"id": 8, "model_name": "emulated_llm", "model_version": 1, "request_id": "poisson-40#4"},
        {"id": 8, "timestamps": [{"name": "QUEUE_START", "ns": 120}, {"name": "REQUEST_END", "ns": 400}]},
        {"id": 9, "model_name": "emulated_llm", "model_version": 1},  # no request id: not ours
        {"id": 9, "timestamps": [{"name": "QUEUE_START", "ns": 1}, {"name": "REQUEST_END", "ns": 2}]},
    ]
    spans = parse_trace(entries)
    assert set(spans) == {"poisson-40#3", "poisson-40#4"}
    done = spans["poisson-40#3"]
    assert done.executed and done.queue_s == pytest.approx(200e-9) and done.latency_s == pytest.approx(850e-9)
    assert not spans["poisson-40#4"].executed  # rejected by the queue policy: never computed


def test_fit_cost_recovers_the_execute_cost() -> None:
    batches = [Batch(0, int((0.021 + 0.0021 * n) * 1e9), n) for n in (1, 2, 4, 8, 16)]
    a, b, rms = fit_cost(batches)
    assert a == pytest.approx(0.021, abs=1e-6) and b == pytest.approx(0.0021, abs=1e-7) and rms < 1e-3
    with pytest.raises(ValueError):
        fit_cost(batches[:1])


def test_handoffs_tell_won_from_missed_and_skip_what_an_arrival_would_hide() -> None:
    cfg = BatcherConfig(
        max_batch_size=8,
        preferred_batch_sizes=(4,),
        max_queue_delay_us=5000,
        priority_levels=1,
        default_priority_level=1,
    )
    spans = [
        # won: X queued during A, its delay long expired at A's end (30 ms), next batch 0.5 ms later
        _span("a", 0, 5, 30),
        _span("x", 10, 30.5, 55),
        # missed: Y queued during B, nothing happens at B's end (80) until Z arrives at 120
        _span("b", 60, 65, 80),
        _span("y", 70, 120.1, 145),
        _span("z", 120, 120.1, 145),
        # skipped: W queued during C; V arrives 1 ms after C's end, before W's batch was due
        _span("c", 200, 205, 230),
        _span("w", 210, 231.2, 260),
        _span("v", 231, 231.2, 260),
        # unexplained: U starts 20 ms late with no arrival or poll to explain it
        _span("d", 300, 305, 330),
        _span("u", 310, 350, 375),
    ]
    obs = observe_handoffs(spans, cfg)
    assert (obs.races, obs.missed, obs.unexplained) == (3, 1, 1)
    assert obs.handoff_s == pytest.approx(0.0005) and obs.handoff_samples == 1
    assert obs.missed_p == pytest.approx(1 / 3)


def test_the_batching_block_under_test_is_what_the_server_loads() -> None:
    block = dynamic_batching_block(DEFAULT_BATCHING)
    assert block.startswith("dynamic_batching {") and block.endswith("}")
    assert "priority_levels: 2" in block and "default_timeout_microseconds: 200000" in block
    assert "key: 1" in block and "instance_group" not in block and "max_batch_size" not in block
    assert block in emulated_llm_config(max_batch_size=16, dynamic_batching=block)


def test_cases_are_seeded_and_hit_their_rates(tmp_path: Path) -> None:
    case = poisson_case(100.0, 20.0, {"urgent": 0.2, "standard": 0.8}, seed=3)
    assert case == poisson_case(100.0, 20.0, {"urgent": 0.2, "standard": 0.8}, seed=3)
    assert 1800 < len(case.schedule) < 2200
    assert 0.15 < sum(c == "urgent" for _t, c in case.schedule) / len(case.schedule) < 0.25
    csv = tmp_path / "t.csv"
    times = np.sort(np.random.default_rng(0).uniform(0, 600, 3000))
    csv.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{t:.4f},100,10\n" for t in times))
    sliced = trace_case(csv, (100.0, 300.0), 80.0, {"standard": 1.0}, seed=0)
    assert sliced.offered_rps == pytest.approx(80.0)
    span = sliced.schedule[-1][0] - sliced.schedule[0][0]
    assert (len(sliced.schedule) - 1) / span == pytest.approx(80.0, rel=0.05)


def test_repeats_pool_triton_figures_and_weigh_every_repeat_the_same_in_the_simulator() -> None:
    case = poisson_case(50.0, 4.0, {"urgent": 0.5, "standard": 0.5}, seed=1)
    again = case.again(1)
    assert again.schedule == case.schedule and again.request_id(0) != case.request_id(0)
    # Two repeats: latencies 10..19 ms and 30..39 ms, one rejection in the second.
    first = {case.request_id(i): _span(case.request_id(i), 0, 0, 10 + i) for i in range(10)}
    second = {again.request_id(i): _span(again.request_id(i), 0, 0, 30 + i) for i in range(10)}
    second[again.request_id(10)] = _span(again.request_id(10), 0, None, None)
    runs = [
        (
            case,
            RealRun(
                first, {"nv_inference_count": 10, "nv_inference_exec_count": 5}, {}, (0, 0, 0), (0, 0, 0)
            ),
        ),
        (
            again,
            RealRun(
                second, {"nv_inference_count": 10, "nv_inference_exec_count": 1}, {}, (0, 0, 0), (0, 0, 0)
            ),
        ),
    ]
    pooled = real_figures(runs)
    latencies = [(10 + i + 0.05) for i in range(10)] + [(30 + i + 0.05) for i in range(10)]
    assert pooled["latency_p95_ms"] == pytest.approx(quantile(latencies, 0.95), rel=1e-6)
    assert pooled["mean_batch"] == pytest.approx(20 / 6)  # counters summed, not ratios averaged
    assert pooled["rejected"] == pytest.approx(0.5)  # per repeat
    # The simulator: a deterministic repeat (no misses) runs once but counts as many runs as a
    # random one, so the pooled figures are not dominated by the random repeat.
    cost = BlockingBatchCost(0.020, 0.002)
    fast = SimInput(_arrivals(*range(0, 400, 40)), cost, 0.0)
    slow = SimInput(_arrivals(*range(0, 400, 40)), BlockingBatchCost(0.060, 0.002), 0.5)
    figs, each = run_sim([fast, slow], NO_PREFETCH, runs=4, seed=0)
    assert len(each) == 2 and each[0]["latency_mean_ms"] < each[1]["latency_mean_ms"]
    expected = (each[0]["latency_mean_ms"] + each[1]["latency_mean_ms"]) / 2
    assert figs["latency_mean_ms"] == pytest.approx(expected)
    assert figs["mean_batch"] == pytest.approx(1.0)


def test_a_tail_percentile_of_a_few_hundred_requests_is_known_to_an_interval() -> None:
    latencies = [float(i) for i in range(1, 601)]  # ranks are values: the interval names ranks
    low, high = quantile_interval(latencies, 0.95)
    assert 555 <= low < quantile(latencies, 0.95) < high <= 585, (low, high)
    # More requests pin it down: the interval in ranks grows as sqrt(n), the ranks as n.
    many = [float(i) / 10 for i in range(1, 6001)]
    many_low, many_high = quantile_interval(many, 0.95)
    assert (many_high - many_low) / 600 < (high - low) / 600 / 2
    assert all(math.isnan(v) for v in quantile_interval([], 0.95))
    assert beyond_interval(100.0, 90.0, 110.0) == 0.0
    assert beyond_interval(121.0, 90.0, 110.0) == pytest.approx(0.1)
    assert beyond_interval(81.0, 90.0, 110.0) == pytest.approx(-0.1)
    assert beyond_interval(None, 90.0, 110.0) is None
    assert beyond_interval(100.0, float("nan"), float("nan")) is None


def test_fidelity_is_a_phoenix_subcommand() -> None:
    assert COMMANDS["fidelity"] == "phoenix_operator.fidelity.cli:fidelity"


# --------------------------------------------------------------------------------------------
# Real server
# --------------------------------------------------------------------------------------------
@pytest.mark.triton
def test_simulator_batches_like_triton_at_small_size(tmp_path: Path) -> None:
    config = FidelityConfig(
        rates=(60.0, 160.0),
        duration_s=5.0,
        min_requests=0,
        trace=default_trace(),
        trace_window=(1200.0, 1260.0),
        trace_rate=100.0,
        calibration_pairs=20,
        calibration_bursts=4,
        sim_runs=8,
        repeats=2,
    )
    report = run_fidelity(config, tmp_path)
    cal = report.calibration
    # The Python backend adds ~1 ms per execute to the nominal 20 ms + 2 ms x rows.
    assert 20e-3 <= cal.a_fit_s <= 25e-3 and 1.8e-3 <= cal.b_fit_s <= 2.6e-3, cal
    assert len(report.results) == (3 if config.trace else 2)
    cases = {case.name: case for case in build_cases(config)}
    for result in report.results:
        # Both sendings of the stream reached the server under their own ids and were pooled.
        assert len(result.notes["repeats"]) == 2, result.case
        assert result.requests == 2 * len(cases[result.case].schedule), result.case
        assert result.notes["missing_traces"] == 0, result.case
        assert not result.saturated, result.case
        # Two views of Triton's batches agree: /metrics counters and the trace's groups.
        assert result.notes["trace_mean_batch"] == pytest.approx(result.real["mean_batch"], rel=0.01)
        # Late starts other than missed wake-ups stay rare: a semantic gap would show up here.
        obs = result.handoffs
        assert obs.unexplained <= max(2, 0.05 * obs.races), (result.case, obs)
        errors = {key: 1.0 if err is None else err for key, err in result.errors.items()}
        summary = f"{result.case}: {errors}"
        assert abs(errors["mean_batch"]) <= 0.10, summary
        assert abs(errors["latency_mean_ms"]) <= 0.10, summary
        # A p95 of ~600 requests is itself uncertain (ranks 560-581 of them), and on a shared
        # 2-core machine that stretch of the tail is wide: the simulator's p95 is held to within
        # 15 % of where Triton's p95 lies with 95 % confidence, not of the one rank.
        interval = result.notes["real_latency_p95_interval_ms"]
        assert interval[0] <= result.real["latency_p95_ms"] <= interval[1], interval
        beyond = beyond_interval(result.sim["latency_p95_ms"], *interval)
        assert beyond is not None and abs(beyond) <= 0.15, (summary, interval, result.notes["repeats"])
