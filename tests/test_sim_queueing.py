"""Closed forms and determinism of the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from phoenix_operator.sim import Arrival, BatcherConfig, BlockingBatchCost, simulate
from phoenix_operator.sim.bench import make_context, run_policy
from phoenix_operator.sim.profile import load_profile
from phoenix_operator.sim.workloads import diurnal_workload


def _poisson(rate: float, n: int, seed: int) -> list[Arrival]:
    rng = np.random.default_rng(seed)
    return [Arrival(float(t)) for t in np.cumsum(rng.exponential(1.0 / rate, n))]


@pytest.mark.parametrize("rho", [0.2, 0.4])
def test_md1_mean_wait_matches_pollaczek_khinchine(rho: float) -> None:
    service = 0.02
    rate = rho / service
    recs = simulate(
        _poisson(rate, 30_000, seed=7), BatcherConfig(max_batch_size=1), BlockingBatchCost(service, 0.0)
    )
    waits = np.array([r.queue_s for r in recs])
    expected = rho * service / (2 * (1 - rho))  # M/D/1: Wq = rho D / (2 (1 - rho))
    assert waits.mean() == pytest.approx(expected, rel=0.08)
    # Latency of a blocking model is queue + compute.
    assert np.allclose([r.ttft_s for r in recs], waits + service)


def test_md1_utilisation_is_the_offered_load() -> None:
    recs = simulate(
        _poisson(10.0, 20_000, seed=3), BatcherConfig(max_batch_size=1), BlockingBatchCost(0.03, 0.0)
    )
    busy = 0.03 * len(recs)
    span = max(r.done_s or 0.0 for r in recs)
    assert busy / span == pytest.approx(0.3, rel=0.05)


def test_same_seed_same_run_different_seed_different_mix() -> None:
    profile = load_profile()

    def run(seed: int) -> list[tuple[float, float, str]]:
        workload = diurnal_workload(60.0, mean_rate=20.0, seed=seed)
        ctx = make_context(workload, profile, seed=seed)
        result = run_policy(ctx, "hpa", 3.0).result
        return [(r.arrival_s, r.ttft_s, r.klass) for r in result.records]

    assert run(11) == run(11)
    assert run(11) != run(12)
