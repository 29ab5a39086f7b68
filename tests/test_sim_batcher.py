"""Triton dynamic-batcher semantics in the simulator (blocking a + b×rows model, 1 replica)."""

from __future__ import annotations

import pytest

from phoenix_operator.sim import Arrival, BatcherConfig, BlockingBatchCost, QueuePolicy, simulate
from phoenix_operator.sim.batcher import DynamicBatcher
from phoenix_operator.sim.request import RequestRecord

MS = 1e-3


def _arrivals(*times_ms: float, priority: int = 0) -> list[Arrival]:
    return [Arrival(t * MS, priority=priority) for t in times_ms]


def test_preferred_size_dispatches_before_the_delay_expires() -> None:
    cfg = BatcherConfig(max_batch_size=8, preferred_batch_sizes=(4,), max_queue_delay_us=100_000)
    recs = simulate(_arrivals(0, 1, 2, 3, 50), cfg, BlockingBatchCost(0.010, 0.0))
    first4 = recs[:4]
    # The 4th arrival completes the preferred size: all four start at 3 ms, long before 100 ms.
    assert all(r.dispatch_s == pytest.approx(3 * MS) for r in first4)
    assert {r.batch_size for r in first4} == {4}
    assert len({r.batch_id for r in first4}) == 1
    # The straggler waits for its own delay (from its own enqueue time).
    assert recs[4].dispatch_s == pytest.approx(150 * MS)
    assert recs[4].batch_size == 1


def test_delay_timer_starts_at_the_oldest_pending_request() -> None:
    cfg = BatcherConfig(max_batch_size=8, preferred_batch_sizes=(8,), max_queue_delay_us=100_000)
    recs = simulate(_arrivals(0, 40, 70), cfg, BlockingBatchCost(0.001, 0.0))
    # Sent when the oldest (t=0) has waited 100 ms, not 100 ms after the newest.
    assert [r.dispatch_s for r in recs] == pytest.approx([0.1, 0.1, 0.1])
    assert recs[0].queue_s == pytest.approx(0.1)
    assert recs[2].queue_s == pytest.approx(0.03)


def test_zero_delay_sends_whatever_is_pending_when_an_instance_frees() -> None:
    cfg = BatcherConfig(max_batch_size=8)
    # First request occupies the instance 0..100 ms; five more queue meanwhile.
    recs = simulate(_arrivals(0, 10, 20, 30, 40, 50), cfg, BlockingBatchCost(0.1, 0.0))
    assert recs[0].batch_size == 1
    assert {r.batch_size for r in recs[1:]} == {5}
    assert all(r.dispatch_s == pytest.approx(0.1) for r in recs[1:])


def test_expired_delay_sends_all_pending_not_just_the_preferred_size() -> None:
    # Priorities on (no prefetch): batches form only when the instance is free.
    base = dict(max_batch_size=8, preferred_batch_sizes=(2,), priority_levels=1, default_priority_level=1)
    times = (0, 10, 20, 30, 40, 50)
    busy = BlockingBatchCost(0.1, 0.0)
    no_delay = simulate(_arrivals(*times), BatcherConfig(**base), busy)  # type: ignore[arg-type]
    with_delay = simulate(_arrivals(*times), BatcherConfig(max_queue_delay_us=5_000, **base), busy)  # type: ignore[arg-type]
    # Without a delay Triton takes the largest preferred size it reached (2) ...
    assert no_delay[1].batch_size == 2
    # ... but once the oldest request's delay has expired it sends everything pending (5).
    assert with_delay[1].batch_size == 5


def test_max_batch_size_caps_a_batch() -> None:
    cfg = BatcherConfig(max_batch_size=3)
    recs = simulate(_arrivals(0, 1, 2, 3, 4, 5, 6), cfg, BlockingBatchCost(0.05, 0.0))
    assert max(r.batch_size for r in recs) == 3
    assert [r.batch_size for r in recs[1:]] == [3, 3, 3, 3, 3, 3]


def test_priorities_reorder_the_queue() -> None:
    cfg = BatcherConfig(max_batch_size=1, priority_levels=3, default_priority_level=2)
    arrivals = [
        Arrival(0.000, priority=2),  # runs first, keeps the instance busy for 100 ms
        Arrival(0.010, priority=3),  # bulk, arrived first
        Arrival(0.020, priority=2),  # standard
        Arrival(0.030, priority=1),  # urgent, arrived last
    ]
    recs = simulate(arrivals, cfg, BlockingBatchCost(0.1, 0.0))
    order = sorted(recs[1:], key=lambda r: r.dispatch_s or 0.0)
    assert [r.priority for r in order] == [1, 2, 3]
    assert recs[3].dispatch_s == pytest.approx(0.1)


def test_priority_zero_and_out_of_range_fall_back_to_the_default_level() -> None:
    cfg = BatcherConfig(max_batch_size=1, priority_levels=2, default_priority_level=2)
    assert cfg.level_for(0) == 2
    assert cfg.level_for(7) == 2
    assert cfg.level_for(1) == 1
    assert BatcherConfig().level_for(5) == 0


def test_max_queue_size_rejects_on_enqueue_per_level() -> None:
    policy = QueuePolicy(max_queue_size=2)
    cfg = BatcherConfig(
        max_batch_size=1, priority_levels=2, default_priority_level=2, default_queue_policy=policy
    )
    arrivals = [Arrival(0.0, priority=2)] + [Arrival(0.001 * i, priority=2) for i in range(1, 5)]
    arrivals += [Arrival(0.006, priority=1), Arrival(0.007, priority=1)]
    recs = simulate(arrivals, cfg, BlockingBatchCost(0.1, 0.0))
    statuses = [r.status for r in recs]
    # Level 2 holds two queued requests; the 3rd and 4th queued are rejected. Level 1 has its own room.
    assert statuses == ["ok", "ok", "ok", "rejected", "rejected", "ok", "ok"]
    assert recs[3].reject_reason == "queue full"


def test_timeout_reject_drops_requests_that_wait_too_long() -> None:
    policy = QueuePolicy(timeout_action="REJECT", default_timeout_us=50_000)
    cfg = BatcherConfig(max_batch_size=4, default_queue_policy=policy)
    recs = simulate(_arrivals(0, 10, 80), cfg, BlockingBatchCost(0.1, 0.0))
    assert recs[0].status == "ok"
    # Queued at 10 ms, instance free at 100 ms: its 50 ms timeout expired at 60 ms.
    assert recs[1].status == "timeout"
    assert recs[1].first_token_s is None
    # Queued at 80 ms: still within its timeout at 100 ms.
    assert recs[2].status == "ok"
    assert recs[2].dispatch_s == pytest.approx(0.1)


def test_timeout_delay_demotes_behind_unexpired_requests_of_its_level() -> None:
    policy = QueuePolicy(timeout_action="DELAY", default_timeout_us=50_000)
    cfg = BatcherConfig(
        max_batch_size=1, priority_levels=1, default_priority_level=1, default_queue_policy=policy
    )
    # A queues at 10 ms (expires at 60 ms), B at 70 ms; the instance frees at 100 ms.
    recs = simulate(_arrivals(0, 10, 70), cfg, BlockingBatchCost(0.1, 0.0))
    a, b = recs[1], recs[2]
    assert a.status == b.status == "ok"
    assert b.dispatch_s == pytest.approx(0.1)
    assert a.dispatch_s == pytest.approx(0.2)


def test_timeout_override_only_shortens_the_default() -> None:
    policy = QueuePolicy(default_timeout_us=100, allow_timeout_override=True)
    assert policy.timeout_for(50) == 50
    assert policy.timeout_for(500) == 100
    assert QueuePolicy(default_timeout_us=0, allow_timeout_override=True).timeout_for(50) == 0
    assert QueuePolicy(default_timeout_us=100).timeout_for(50) == 100


def test_prefetch_payload_grows_while_the_instance_is_busy() -> None:
    cfg = BatcherConfig(max_batch_size=8)
    assert cfg.supports_prefetching
    assert not BatcherConfig(priority_levels=2, default_priority_level=1).supports_prefetching
    assert not BatcherConfig(default_queue_policy=QueuePolicy(max_queue_size=3)).supports_prefetching
    recs = simulate(_arrivals(0, 10, 20, 30), cfg, BlockingBatchCost(0.1, 0.0))
    assert [r.batch_size for r in recs] == [1, 3, 3, 3]


def test_instances_run_batches_in_parallel() -> None:
    one = simulate(_arrivals(0, 1), BatcherConfig(max_batch_size=1), BlockingBatchCost(0.1, 0.0))
    two = simulate(
        _arrivals(0, 1), BatcherConfig(max_batch_size=1, instance_count=2), BlockingBatchCost(0.1, 0.0)
    )
    assert one[1].dispatch_s == pytest.approx(0.1)
    assert two[1].dispatch_s == pytest.approx(0.001)


def test_empty_preferred_sizes_mean_max_batch_size() -> None:
    assert BatcherConfig(max_batch_size=16).effective_preferred == (16,)
    assert BatcherConfig(max_batch_size=16, preferred_batch_sizes=(8, 4, 8)).effective_preferred == (4, 8)
    with pytest.raises(ValueError):
        BatcherConfig(max_batch_size=4, preferred_batch_sizes=(8,))


def test_formation_returns_a_wait_until_the_oldest_delay() -> None:
    batcher = DynamicBatcher(BatcherConfig(max_batch_size=8, max_queue_delay_us=10_000))
    rec = RequestRecord(0, Arrival(0.0), "standard")
    assert batcher.enqueue(rec, now=1.0)
    f = batcher.form(now=1.002)
    assert f.taken == []
    assert f.wait_until == pytest.approx(1.010)
    f = batcher.form(now=1.010)
    assert f.taken == [rec]
    assert batcher.size == 0


def test_config_round_trips_and_renders_pbtxt() -> None:
    cfg = BatcherConfig(
        max_batch_size=8,
        preferred_batch_sizes=(4, 8),
        max_queue_delay_us=2000,
        priority_levels=3,
        default_priority_level=2,
        priority_queue_policy={3: QueuePolicy(timeout_action="DELAY", default_timeout_us=5000)},
    )
    assert BatcherConfig.from_dict(cfg.to_dict()) == cfg
    text = cfg.to_pbtxt()
    assert "preferred_batch_size: [ 4, 8 ]" in text
    assert "max_queue_delay_microseconds: 2000" in text
    assert "timeout_action: DELAY" in text
    assert "key: 3" in text
