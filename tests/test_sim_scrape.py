"""The metric pipeline controllers read through: scrape interval, lag, rate(), histogram_quantile."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pytest
import simpy

from phoenix_operator.sim import Arrival, BatcherConfig, BlockingBatchCost, FleetCommand, FleetView, run_fleet
from phoenix_operator.sim.fleet import Fleet, FleetSettings
from phoenix_operator.sim.replica import call_at
from phoenix_operator.sim.request import RequestRecord
from phoenix_operator.sim.scrape import (
    GATEWAY_TTFT_BUCKETS,
    VLLM_TTFT_BUCKETS,
    FleetScraper,
    GaugeSample,
    ScrapeSettings,
    extrapolated_rate,
    histogram_quantile,
)

CFG = BatcherConfig(max_batch_size=4)
COST = BlockingBatchCost(0.05, 0.0)
NO_GAUGES = GaugeSample((), (), (), 0.0, None)


def test_histogram_quantile_interpolates_inside_the_bucket_as_prometheus_does() -> None:
    # 10 requests: 2 at 50 ms, 3 at 300 ms, 4 at 800 ms, 1 at 2 s; le = 0.1, 0.5, 1, 2.5, +Inf.
    edges = (0.1, 0.5, 1.0, 2.5)
    cumulative = [2, 5, 9, 10, 10]
    # p95: rank 9.5 falls in (1, 2.5] holding 1 request above 9: 1 + 1.5 x 0.5.
    assert histogram_quantile(0.95, edges, cumulative) == pytest.approx(1.75)
    # p50: rank 5 is the top of (0.1, 0.5]: 0.1 + 0.4 x 3/3.
    assert histogram_quantile(0.5, edges, cumulative) == pytest.approx(0.5)
    # p10: rank 1 in the first bucket, which starts at 0.
    assert histogram_quantile(0.1, edges, cumulative) == pytest.approx(0.05)
    # Beyond the last finite edge: the largest finite edge, however slow the requests were.
    assert histogram_quantile(0.95, edges, [0, 0, 0, 1, 20]) == pytest.approx(2.5)
    assert np.isnan(histogram_quantile(0.95, edges, [0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="cumulative"):
        histogram_quantile(0.5, edges, [1, 2])


def test_rate_extrapolates_to_the_window_edges_and_stops_at_zero() -> None:
    t = np.array([15.0, 30.0, 45.0, 60.0])
    v = 10.0 * t  # 10 per second, counted since t = 0
    # Samples cover 45 s of a 60 s window: the increase of 450 is extrapolated by the 15 s gap.
    assert extrapolated_rate(t, v, 0.0, 60.0) == pytest.approx(10.0)
    # A counter that started at the first sample is not extrapolated before it: 150 counted over
    # 0-15 s, extended 5 s to the window end only, over a 60 s window.
    assert extrapolated_rate(np.array([0.0, 15.0]), np.array([0.0, 150.0]), -40.0, 20.0) == pytest.approx(
        150 * 20 / 15 / 60
    )
    assert extrapolated_rate(np.array([15.0]), np.array([1.0]), 0.0, 60.0) is None


@dataclass
class Logs:
    """Event logs as the fleet keeps them (only first tokens used here)."""

    arr_t: list[float] = field(default_factory=list)
    err_t: list[float] = field(default_factory=list)
    ft_t: list[float] = field(default_factory=list)
    ft_v: list[float] = field(default_factory=list)
    ft_c: list[str] = field(default_factory=list)
    ft_p: list[int] = field(default_factory=list)
    fin_t: list[float] = field(default_factory=list)
    fin_o: list[int] = field(default_factory=list)
    fin_tpot: list[float] = field(default_factory=list)
    dq_t: list[float] = field(default_factory=list)
    dq_queue: list[float] = field(default_factory=list)
    dq_compute: list[float] = field(default_factory=list)
    b_t: list[float] = field(default_factory=list)
    b_rows: list[int] = field(default_factory=list)


def test_scraped_p95_is_the_bucket_interpolation_of_the_window_not_the_exact_value() -> None:
    """Per 15 s scrape, 20 first tokens: 18 at 0.3 s and 2 at 4 s (p95 exactly 4 s).

    In the gateway's buckets 0.3 s sits in (0.2, 0.3] and 4 s in (3, 4]; rank 0.95 x 20 = 19
    lies in the slow bucket holding 2 above 18: 3 + 1 x (19 - 18) / 2 = 3.5 s.
    """
    scraper = FleetScraper(ScrapeSettings())
    logs = Logs()
    scraper.scrape(0.0, logs, 0.0, NO_GAUGES)
    for stamp in (15.0, 30.0, 45.0, 60.0):
        for i in range(20):
            logs.ft_t.append(stamp - 1)
            logs.ft_v.append(4.0 if i < 2 else 0.3)
            logs.ft_c.append("urgent")
            logs.ft_p.append(100)
        scraper.scrape(stamp, logs, 0.0, NO_GAUGES)
    assert scraper.quantile(0.95, "class_ttft", 60.0, 60.0, "urgent") == pytest.approx(3.5)
    # vLLM's buckets have (2.5, 5] there: 2.5 + 2.5 x 1/2.
    assert scraper.quantile(0.95, "ttft", 60.0, 60.0) == pytest.approx(3.75)
    assert scraper.rate("first_tokens", 60.0, 60.0) == pytest.approx(80 / 60)
    assert scraper.rate("prompt_tokens", 60.0, 60.0) == pytest.approx(8000 / 60)
    # A window with fewer than two samples has no rate, so no quantile.
    assert scraper.quantile(0.95, "ttft", 60.0, 10.0) is None


def test_bucket_edges_match_what_the_exporters_publish() -> None:
    from phoenix_operator.gateway.metrics import TTFT_BUCKETS
    from phoenix_operator.local.triton_metrics import VLLM_TTFT_BUCKETS as EXPORTED_VLLM

    assert GATEWAY_TTFT_BUCKETS == TTFT_BUCKETS
    assert VLLM_TTFT_BUCKETS == EXPORTED_VLLM


def _fleet_with(arrivals: list[float], settings: FleetSettings, until: float) -> Fleet:
    env = simpy.Environment()
    fleet = Fleet(env, COST, CFG, settings, len(arrivals))
    records = [RequestRecord(i, Arrival(t), "standard") for i, t in enumerate(arrivals)]
    for rec in records:
        call_at(env, rec.arrival_s, functools.partial(fleet.submit, rec))
    env.run(until=until)
    return fleet


def test_samples_lag_the_exporters_by_the_configured_delay() -> None:
    arrivals = [i / 10 for i in range(600)]  # 10/s for 60 s
    fleet = _fleet_with(arrivals, FleetSettings(scrape=ScrapeSettings(interval_s=10.0, lag_s=3.0)), 60.0)
    scraper = fleet.scraper
    assert scraper is not None
    assert scraper.times[:6] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    # The sample stamped 20 s holds the arrivals up to 17 s: 0.0, 0.1, ... 17.0.
    assert scraper.counters[2][0] == 171
    without_lag = _fleet_with(
        arrivals, FleetSettings(scrape=ScrapeSettings(interval_s=10.0, lag_s=0.0)), 60.0
    )
    assert without_lag.scraper is not None and without_lag.scraper.counters[2][0] == 201


@dataclass
class Recorder:
    name: str = "recorder"
    interval_s: float = 30.0
    views: list[FleetView] = field(default_factory=list)

    def decide(self, now: float, view: FleetView) -> FleetCommand:
        self.views.append(view)
        return FleetCommand()


def test_controllers_see_scraped_figures_through_the_fleet_view() -> None:
    arrivals = [Arrival(i / 5) for i in range(5 * 120)]  # 5/s for 120 s, each served in 50 ms
    rec = Recorder()
    run_fleet(arrivals, COST, CFG, FleetSettings(initial_replicas=2, scrape=ScrapeSettings()), rec)
    obs = next(v for v in rec.views if v.now == 90.0).observation
    assert obs.window_s == 60.0
    assert obs.request_rate == pytest.approx(5.0, rel=0.03)
    # Every TTFT is 50 ms; vLLM's buckets put it in (0.04, 0.06]: 0.04 + 0.02 x 0.95.
    assert obs.ttft_p95_s == pytest.approx(0.059)
    assert obs.ttft_source == "vllm-histogram"
    exact = Recorder()
    run_fleet(arrivals, COST, CFG, FleetSettings(initial_replicas=2), exact)
    assert next(v for v in exact.views if v.now == 90.0).observation.ttft_p95_s == pytest.approx(0.05)
    # At the first decision the 60 s window holds samples from 0-30 s only: the rate is
    # Prometheus' (no extrapolation before the counters' start), not the true 5/s.
    first = rec.views[0].observation
    assert first.request_rate is not None and first.request_rate < 5.0 * 0.6


def test_scrape_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="interval"):
        ScrapeSettings(interval_s=0)
    with pytest.raises(ValueError, match="increasing"):
        ScrapeSettings(ttft_buckets=(1.0, 0.5))


def test_start_up_times_are_drawn_per_pod_reproducibly_and_policies_are_told_a_wrong_value() -> None:
    from phoenix_operator.sim.bench import WarmupSettings

    settings = FleetSettings(startup_s=100.0, startup_distribution="uniform", startup_spread=0.3, seed=4)
    draws = [_fleet_with([], settings, 1.0).startup_delay() for _ in range(2)]
    fleet = _fleet_with([], settings, 1.0)
    many = [fleet.startup_delay() for _ in range(200)]
    assert draws[0] == draws[1] == many[0]  # seeded: the same run draws the same pods
    assert 70.0 <= min(many) < 80.0 and 120.0 < max(many) <= 130.0
    told = WarmupSettings("fixed", 0.0, 0.3).told(100.0, seed=4)
    assert told is not None and 70.0 <= told <= 130.0 and told != 100.0
    assert told == WarmupSettings("fixed", 0.0, 0.3).told(100.0, seed=4)
    assert WarmupSettings().told(100.0, seed=4) is None
