"""Property tests of the batcher: bounds, conservation, FIFO within a level, strict priority."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_operator.sim import Arrival, BatcherConfig, BlockingBatchCost, simulate

arrival_lists = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=2.0, allow_nan=False), st.integers(min_value=1, max_value=3)
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(
    arrivals=arrival_lists,
    max_batch=st.integers(min_value=1, max_value=8),
    preferred=st.lists(st.integers(min_value=1, max_value=8), max_size=3),
    delay_us=st.sampled_from([0, 1_000, 20_000]),
    instances=st.integers(min_value=1, max_value=2),
    a_ms=st.floats(min_value=1.0, max_value=50.0),
)
def test_batches_respect_bounds_order_and_priority(
    arrivals: list[tuple[float, int]],
    max_batch: int,
    preferred: list[int],
    delay_us: int,
    instances: int,
    a_ms: float,
) -> None:
    cfg = BatcherConfig(
        max_batch_size=max_batch,
        preferred_batch_sizes=tuple(p for p in preferred if p <= max_batch),
        max_queue_delay_us=delay_us,
        instance_count=instances,
        priority_levels=3,
        default_priority_level=2,
    )
    recs = simulate([Arrival(t, priority=p) for t, p in arrivals], cfg, BlockingBatchCost(a_ms / 1000, 0.001))
    # Conservation: without queue policies every request is served exactly once.
    assert all(r.status == "ok" for r in recs)
    sizes: dict[int, int] = {}
    for r in recs:
        sizes[r.batch_id] = sizes.get(r.batch_id, 0) + 1
    assert all(r.batch_size == sizes[r.batch_id] <= max_batch for r in recs)
    assert all(r.queue_s is not None and r.queue_s >= -1e-12 for r in recs)
    for r in recs:
        assert r.dispatch_s is not None
        for other in recs:
            assert other.dispatch_s is not None
            if other.level == r.level and other.arrival_s < r.arrival_s - 1e-12:
                # FIFO within a level.
                assert other.dispatch_s <= r.dispatch_s + 1e-12
            if other.level < r.level and other.arrival_s < r.dispatch_s - 1e-9:
                # Strict priority: a more urgent request queued before r's batch formed went no later.
                assert other.dispatch_s <= r.dispatch_s + 1e-12
