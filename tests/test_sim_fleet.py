"""Fleet behaviour: GPU-hour accounting, start-up delay, draining, load balancing, observations."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from phoenix_operator.sim import (
    Arrival,
    BatcherConfig,
    BlockingBatchCost,
    FleetCommand,
    FleetSettings,
    FleetView,
    run_fleet,
    simulate,
)

CFG = BatcherConfig(max_batch_size=4)
COST = BlockingBatchCost(0.05, 0.0)


@dataclass
class Scripted:
    """Issues scripted commands at given times and records every view it is shown."""

    script: dict[float, FleetCommand]
    name: str = "scripted"
    interval_s: float = 10.0
    views: list[FleetView] = field(default_factory=list)

    def decide(self, now: float, view: FleetView) -> FleetCommand:
        self.views.append(view)
        return self.script.get(now, FleetCommand())


def _steady(rate: float, duration: float) -> list[Arrival]:
    n = int(rate * duration)
    return [Arrival(i / rate) for i in range(n)]


def test_static_fleet_gpu_hours_are_replicas_times_horizon() -> None:
    res = run_fleet(_steady(5, 60), COST, CFG, FleetSettings(initial_replicas=3), horizon_s=3600.0)
    assert res.gpu_hours == pytest.approx(3.0)
    assert res.scaling_actions == 0


def test_starting_replicas_are_billed_but_get_no_traffic_until_ready() -> None:
    ctl = Scripted({10.0: FleetCommand(target_replicas=2, reason="up")})
    settings = FleetSettings(initial_replicas=1, startup_s=30.0, max_replicas=4)
    res = run_fleet(_steady(10, 100), COST, CFG, settings, ctl, horizon_s=100.0)
    assert res.scaling_actions == 1
    # Replica 1 exists from t=10 (billed) but is READY only at t=40.
    assert res.replica_spans[1][0] == pytest.approx(10.0)
    assert res.replica_spans[1][1] == pytest.approx(40.0)
    assert res.gpu_seconds() == pytest.approx(100.0 + 90.0)
    on_new = [r for r in res.records if r.replica == 1]
    assert on_new
    assert min(r.arrival_s for r in on_new) >= 40.0
    assert all(r.replica == 0 for r in res.records if r.arrival_s < 40.0)
    # The controller saw the pod starting, then ready.
    at20 = next(v for v in ctl.views if v.now == 20.0)
    assert (at20.desired_replicas, at20.ready_replicas, at20.starting_replicas) == (2, 1, 1)


def test_scale_down_drains_queued_work_and_stops_billing_after() -> None:
    slow = BlockingBatchCost(1.0, 0.0)
    # Both pods get a backlog; at t=10 one is removed while it still has queued requests.
    arrivals = [Arrival(0.01 * i) for i in range(40)]
    ctl = Scripted({10.0: FleetCommand(target_replicas=1, reason="down")})
    res = run_fleet(arrivals, slow, BatcherConfig(max_batch_size=1), FleetSettings(initial_replicas=2), ctl)
    assert all(r.status == "ok" for r in res.records)
    gone = res.replica_spans[1][2]
    assert gone is not None
    # Replica 1 (the newest ready one) was removed at 10 s but finished its 20 requests first.
    assert gone == pytest.approx(max(r.done_s or 0 for r in res.records if r.replica == 1))
    assert gone > 10.0
    assert all(r.arrival_s < 10.0 for r in res.records if r.replica == 1)


def test_round_robin_spreads_requests_evenly() -> None:
    recs = simulate(_steady(30, 20), CFG, COST, replicas=3)
    counts = [sum(1 for r in recs if r.replica == i) for i in range(3)]
    assert counts == [200, 200, 200]


def test_least_pending_prefers_the_idle_replica() -> None:
    slow = BlockingBatchCost(1.0, 0.0)
    arrivals = [Arrival(0.0), Arrival(0.1), Arrival(0.2)]
    recs = simulate(arrivals, BatcherConfig(max_batch_size=1), slow, replicas=2, lb="least-pending")
    assert [r.replica for r in recs] == [0, 1, 0]
    assert recs[2].dispatch_s == pytest.approx(1.0)


def test_least_pending_is_the_default_and_breaks_ties_round_robin() -> None:
    assert FleetSettings().lb == "least-pending"
    # Light load: every pod is idle at each arrival, so ties rotate instead of piling on pod 0.
    res = run_fleet(_steady(10, 3), COST, CFG, FleetSettings(initial_replicas=3))
    assert [r.replica for r in res.records[:6]] == [0, 1, 2, 0, 1, 2]


def test_least_pending_routes_around_a_pod_busy_with_a_long_request() -> None:
    # One long LLM request occupies a pod; the short ones that follow go to the other pod,
    # where round-robin would put every second one behind the long prefill and decode.
    from phoenix_operator.sim import LLMEngineCost
    from phoenix_operator.sim.profile import load_profile

    cost = LLMEngineCost(load_profile())
    arrivals = [Arrival(0.0, prompt_tokens=4000, output_tokens=90)] + [
        Arrival(0.02 * i, prompt_tokens=100, output_tokens=1) for i in range(1, 5)
    ]
    least = simulate(arrivals, CFG, cost, replicas=2, lb="least-pending")
    rr = simulate(arrivals, CFG, cost, replicas=2, lb="round-robin")
    assert least[0].replica == 0 and all(r.replica == 1 for r in least[1:])
    assert max(r.ttft_s for r in least[1:]) < 0.02
    assert [r.replica for r in rr] == [0, 1, 0, 1, 0]
    assert max(r.ttft_s for r in rr[1:]) > 0.05  # queued behind the 4,000-token prefill


def _timeouts(timeout: float, retries: int) -> FleetSettings:
    return FleetSettings(client_ttft_timeout_s=timeout, client_retries=retries, client_backoff_s=1.0)


# Priority levels switch Triton's prefetch off, so waiting requests stay in the queue.
ONE_AT_A_TIME = BatcherConfig(max_batch_size=1, priority_levels=2, default_priority_level=1)


def test_a_client_gives_up_on_a_queued_request_and_retries_after_a_backoff() -> None:
    slow = BlockingBatchCost(10.0, 0.0)
    arrivals = [Arrival(0.0), Arrival(0.0), Arrival(0.0)]
    res = run_fleet(arrivals, slow, ONE_AT_A_TIME, _timeouts(15.0, 1))
    first, second, third = res.records
    assert first.ttft_s == pytest.approx(10.0)
    # At 15 s the second is executing (its answer is on its way); the third is still queued:
    # cancelled, sent again at 16 s, served 20-30 s. TTFT counts from the first send.
    assert (second.ttft_s, second.attempt) == (pytest.approx(20.0), 1)
    assert (third.ttft_s, third.attempt, third.status) == (pytest.approx(30.0), 2, "ok")
    assert third.enqueue_s == pytest.approx(16.0)
    assert res.retries == 1


def test_a_client_out_of_retries_abandons_and_counts_as_an_error() -> None:
    slow = BlockingBatchCost(10.0, 0.0)
    ctl = Scripted({}, interval_s=20.0)
    res = run_fleet([Arrival(0.0), Arrival(0.0), Arrival(0.0)], slow, ONE_AT_A_TIME, _timeouts(15.0, 0), ctl)
    third = res.records[2]
    assert (third.status, third.reject_reason) == ("abandoned", "client timeout")
    assert third.ttft_s == float("inf")
    assert res.retries == 0
    assert ctl.views[0].observation.error_rate == pytest.approx(1 / 3)


def test_timed_out_llm_requests_leave_the_engine_and_their_retries_add_load() -> None:
    from phoenix_operator.sim import LLMEngineCost
    from phoenix_operator.sim.profile import load_profile

    cost = LLMEngineCost(replace(load_profile().engine, max_num_seqs=1))
    arrivals = [Arrival(0.0, prompt_tokens=100, output_tokens=3000)] + [
        Arrival(0.0, prompt_tokens=100, output_tokens=10) for _ in range(3)
    ]
    never = run_fleet(arrivals, cost, CFG, _timeouts(0.0, 0))
    assert never.records[1].ttft_s > 18.0  # one sequence slot: they wait for the long answer
    ctl = Scripted({}, interval_s=20.0)
    res = run_fleet(arrivals, cost, CFG, _timeouts(5.0, 2), ctl)
    # Each waiting client cancels at 5 s, resends at 6, cancels at 11, resends at 13 and gives
    # up at 18 s: six resends the fleet sees as arrivals, and three abandoned requests.
    assert res.retries == 6
    assert [(r.status, r.attempt) for r in res.records[1:]] == [("abandoned", 3)] * 3
    assert ctl.views[0].observation.request_rate == pytest.approx((4 + 6) / 20.0)
    assert res.records[0].status == "ok"


def test_client_retry_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        FleetSettings(client_ttft_timeout_s=-1.0)
    with pytest.raises(ValueError):
        FleetSettings(client_retries=-1)


def test_observation_has_signals_and_marks_missing_data() -> None:
    ctl = Scripted({})
    arrivals = [a for a in _steady(20, 30)]  # traffic for 30 s, then silence until 60 s
    arrivals.append(Arrival(60.0))
    res = run_fleet(arrivals, COST, CFG, FleetSettings(initial_replicas=2), ctl)
    assert res.records[-1].status == "ok"
    busy = next(v for v in ctl.views if v.now == 20.0).observation
    assert busy.ttft_p95_s is not None and busy.ttft_p95_s >= 0.05
    assert busy.request_rate == pytest.approx(20.0, rel=0.05)
    assert busy.gpu_utilization is not None and 0.2 < busy.gpu_utilization < 1.0
    assert busy.compute_time_s == pytest.approx(0.05)
    assert busy.ready_replicas == 2
    assert busy.ttft_source == "simulator"
    quiet = next(v for v in ctl.views if v.now == 50.0).observation
    assert quiet.ttft_p95_s is None
    assert quiet.missing["ttft_p95_s"] == "no data"
    assert quiet.gpu_utilization == pytest.approx(0.0)
    # No request and nothing queued is zero load, not missing data: the policy may act on it.
    assert quiet.request_rate == 0.0 and quiet.pending_requests == 0.0
    assert quiet.idle and quiet.usable


def test_batching_changes_apply_live_and_are_counted() -> None:
    wide = BatcherConfig(max_batch_size=4, max_queue_delay_us=20_000)
    ctl = Scripted({10.0: FleetCommand(batching=wide, reason="widen"), 20.0: FleetCommand(batching=wide)})
    res = run_fleet(_steady(20, 30), COST, CFG, FleetSettings(initial_replicas=1), ctl)
    assert res.batching_changes == 1
    before = [r.queue_s or 0 for r in res.records if r.arrival_s < 10.0]
    after = [r.queue_s or 0 for r in res.records if r.arrival_s > 10.5]
    assert max(before) < 0.001
    assert min(after) > 0.005  # requests now wait for the 20 ms delay (or a batch to fill)
    assert res.decisions[0].reason == "widen"


def test_fleet_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        FleetSettings(initial_replicas=0)
    with pytest.raises(ValueError):
        FleetSettings(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError):
        FleetSettings(lb="sticky")
