"""The LLM engine model: prefill, fluid decode, KV-limited admission."""

from __future__ import annotations

from dataclasses import replace

import pytest

from phoenix_operator.sim import Arrival, BatcherConfig, LLMEngineCost, simulate
from phoenix_operator.sim.profile import EngineProfile, load_profile


def _engine(**changes: object) -> EngineProfile:
    return replace(load_profile().engine, **changes)  # type: ignore[arg-type]


CFG = BatcherConfig(max_batch_size=8, priority_levels=3, default_priority_level=2)


def test_single_request_ttft_is_prefill_and_decode_follows_step_time() -> None:
    cost = LLMEngineCost(_engine())
    rec = simulate([Arrival(1.0, prompt_tokens=1000, output_tokens=101)], CFG, cost)[0]
    prefill = cost.prefill_time(1000, 1000.0**2, 0, 0.0)
    assert rec.ttft_s == pytest.approx(prefill)
    assert rec.queue_s == pytest.approx(0.0)
    assert rec.latency_s == pytest.approx(prefill + 100 * cost.step_time(1, 1000))


def test_a_batch_of_prompts_shares_one_prefill() -> None:
    cost = LLMEngineCost(_engine())
    # Three requests arrive while the first prefill runs; they are admitted together next.
    arrivals = [Arrival(0.0, prompt_tokens=2000, output_tokens=50)] + [
        Arrival(0.001 * i, prompt_tokens=500, output_tokens=50) for i in (1, 2, 3)
    ]
    recs = simulate(arrivals, CFG, cost)
    assert recs[0].batch_size == 1
    assert {r.batch_size for r in recs[1:]} == {3}
    assert len({r.batch_id for r in recs[1:]}) == 1
    assert recs[1].dispatch_s == pytest.approx(recs[0].first_token_s)


def test_kv_capacity_limits_admission() -> None:
    cost = LLMEngineCost(_engine(kv_capacity_tokens=150))
    arrivals = [
        Arrival(0.0, prompt_tokens=50, output_tokens=50),
        Arrival(0.001, prompt_tokens=50, output_tokens=50),
    ]
    first, second = simulate(arrivals, CFG, cost)
    # 100 KV tokens each: the second fits only once the first has finished and freed its KV.
    assert second.dispatch_s == pytest.approx(first.done_s)
    assert second.ttft_s > first.latency_s - 0.001


def test_prefill_token_budget_splits_batches() -> None:
    cost = LLMEngineCost(_engine(max_prefill_tokens=250))
    arrivals = [Arrival(0.0, prompt_tokens=1000, output_tokens=20)] + [
        Arrival(0.001 * i, prompt_tokens=100, output_tokens=20) for i in (1, 2, 3)
    ]
    recs = simulate(arrivals, CFG, cost)
    assert [r.batch_size for r in recs[1:]] == [2, 2, 1]


def test_decode_slows_down_with_more_active_sequences() -> None:
    cost = LLMEngineCost(_engine())
    alone = simulate([Arrival(0.0, prompt_tokens=100, output_tokens=400)], CFG, cost)[0]
    crowd = simulate(
        [Arrival(0.0, prompt_tokens=100, output_tokens=400)]
        + [Arrival(0.0005 * i, prompt_tokens=2000, output_tokens=800) for i in range(1, 40)],
        CFG,
        cost,
    )[0]
    assert crowd.latency_s > 1.5 * alone.latency_s
    assert cost.step_time(64, 64 * 1000) > cost.step_time(1, 1000)


def test_prompts_longer_than_the_context_are_clipped() -> None:
    cost = LLMEngineCost(_engine())
    assert cost.clip(5000, 300) == (4095, 1)
    assert cost.clip(1000, 300) == (1000, 300)
    rec = simulate([Arrival(0.0, prompt_tokens=5000, output_tokens=300)], CFG, cost)[0]
    assert rec.status == "ok"
    assert rec.prompt_tokens == 4095
    assert rec.done_s == pytest.approx(rec.first_token_s)


def test_every_request_finishes_and_ttft_precedes_completion() -> None:
    cost = LLMEngineCost(_engine())
    arrivals = [
        Arrival(0.01 * i, priority=1 + i % 3, prompt_tokens=300 + 37 * i, output_tokens=5 + i)
        for i in range(300)
    ]
    recs = simulate(arrivals, CFG, cost)
    assert all(r.status == "ok" for r in recs)
    assert all(r.first_token_s is not None and r.done_s is not None for r in recs)
    assert all(r.arrival_s <= (r.dispatch_s or 0) < (r.first_token_s or 0) <= (r.done_s or 0) for r in recs)
