"""The LLM engine model: chunked prefill, fluid decode, paged KV with pre-emption, prefix caching."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from phoenix_operator.data import mooncake_trace
from phoenix_operator.sim import Arrival, BatcherConfig, FleetSettings, LLMEngineCost, run_fleet, simulate
from phoenix_operator.sim.config import QueuePolicy
from phoenix_operator.sim.profile import EngineProfile, load_profile
from phoenix_operator.sim.workloads import read_prefix_blocks, read_trace


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


def _flat(**changes: object) -> LLMEngineCost:
    """An engine whose decode attention is free, so step times do not depend on KV size."""
    base: dict[str, object] = {"decode_attention_s_per_kv_token": 0.0}
    base.update(changes)
    return LLMEngineCost(_engine(**base))


def test_kv_grows_on_demand_and_the_newest_sequence_is_preempted() -> None:
    # 10 blocks of 16 tokens. Each request is admitted with its prompt's 2 blocks (the old
    # reservation of prompt + output, 132 tokens each, would have kept the second one waiting).
    cost = _flat(kv_capacity_tokens=160, kv_block_tokens=16, kv_watermark=0.0)
    arrivals = [
        Arrival(0.0, prompt_tokens=32, output_tokens=100),
        Arrival(0.001, prompt_tokens=32, output_tokens=100),
    ]
    res = run_fleet(arrivals, cost, CFG, FleetSettings())
    first, second = res.records
    step1 = cost.prefill_time(32, 32.0**2, 0, 0.0)
    step2 = cost.prefill_time(32, 32.0**2, 1, 0.0)
    assert first.ttft_s == pytest.approx(step1)
    assert second.first_token_s == pytest.approx(step1 + step2)
    # Both decode until the first holds 80 tokens and the second 79 (5 + 5 blocks); the next
    # token needs an 11th block, so the newer request is pre-empted after 48 of its tokens.
    assert (second.preemptions, first.preemptions, res.preemptions) == (1, 0, 1)
    two, one = cost.step_time(2, 0.0), cost.step_time(1, 0.0)
    assert first.done_s == pytest.approx(step1 + step2 + 47 * two + 51 * one)
    # It is recomputed (prompt + 48 generated tokens) once the first has freed the pool.
    rerun = cost.prefill_time(80, 80.0**2, 0, 0.0)
    assert second.done_s == pytest.approx((first.done_s or 0) + rerun + 51 * one)
    assert second.status == "ok" and second.output_tokens == 100


def test_the_lowest_priority_sequence_is_preempted_first() -> None:
    cost = _flat(kv_capacity_tokens=160, kv_block_tokens=16, kv_watermark=0.0)
    arrivals = [
        Arrival(0.0, priority=1, prompt_tokens=32, output_tokens=40),
        Arrival(0.0005, priority=3, prompt_tokens=32, output_tokens=40),
        Arrival(0.001, priority=1, prompt_tokens=32, output_tokens=40),
    ]
    # Three sequences outgrow the 10 blocks at 49 tokens each; two fit to the end (5 + 5).
    res = run_fleet(arrivals, cost, CFG, FleetSettings())
    assert [r.preemptions > 0 for r in res.records] == [False, True, False]
    assert all(r.status == "ok" for r in res.records)


def test_a_long_prompt_is_prefilled_in_chunks_beside_running_decodes() -> None:
    cost = _flat(max_prefill_tokens=250)
    arrivals = [
        Arrival(0.0, prompt_tokens=100, output_tokens=1000),
        Arrival(0.5, prompt_tokens=600, output_tokens=2),
    ]
    decoding, long = simulate(arrivals, CFG, cost)
    # One decode token first, then 249 prompt tokens a step: chunks of 249, 249 and 102.
    chunks = [(0, 249), (249, 249), (498, 102)]
    prefill = sum(cost.prefill_time(c, float(d + c) ** 2 - float(d) ** 2, 1, 0.0) for d, c in chunks)
    assert long.dispatch_s == pytest.approx(0.5)
    assert long.ttft_s == pytest.approx(prefill)
    assert long.latency_s == pytest.approx(prefill + cost.step_time(2, 0.0))
    assert decoding.status == "ok"


def test_new_prompts_share_a_step_up_to_the_token_budget() -> None:
    cost = LLMEngineCost(_engine(max_prefill_tokens=250))
    arrivals = [Arrival(0.0, prompt_tokens=1000, output_tokens=20)] + [
        Arrival(0.001 * i, prompt_tokens=100, output_tokens=20) for i in (1, 2, 3)
    ]
    recs = simulate(arrivals, CFG, cost)
    # The 1,000-token prompt takes four 250-token steps; then one decode token + 100 + 100 + 49.
    assert recs[0].ttft_s == pytest.approx(
        sum(cost.prefill_time(250, float(d + 250) ** 2 - float(d) ** 2, 0, 0.0) for d in (0, 250, 500, 750))
    )
    assert {r.batch_size for r in recs[1:]} == {3}
    assert recs[1].ttft_s + 0.001 == pytest.approx(recs[2].ttft_s + 0.002)  # same step end
    assert recs[3].ttft_s + 0.003 > recs[2].ttft_s + 0.002  # its last 51 tokens need another step


def test_the_prefix_cache_skips_the_cached_blocks() -> None:
    cost = LLMEngineCost(_engine())
    arrivals = [
        Arrival(0.0, prompt_tokens=1100, output_tokens=2, prefix_blocks=(1, 2, 3)),
        Arrival(1.0, prompt_tokens=1100, output_tokens=2, prefix_blocks=(1, 2, 4)),
        Arrival(2.0, prompt_tokens=1100, output_tokens=2, prefix_blocks=(7, 2, 4)),
    ]
    res = run_fleet(arrivals, cost, CFG, FleetSettings())
    first, shared, other = res.records
    assert first.ttft_s == pytest.approx(cost.prefill_time(1100, 1100.0**2, 0, 0.0))
    # Blocks 1 and 2 (1,024 tokens) are cached: only the last 76 tokens are computed.
    assert shared.prefix_hit_tokens == 1024
    assert shared.ttft_s == pytest.approx(cost.prefill_time(76, 1100.0**2 - 1024.0**2, 0, 0.0))
    # A prefix must match from the first block on.
    assert other.prefix_hit_tokens == 0
    assert res.prefix_hit_rate == pytest.approx(1024 / 3300)


def test_cached_blocks_are_free_blocks_evicted_least_recently_used_first() -> None:
    # 75 blocks: a 1,100-token prompt needs 69, so the next prompt evicts the cached ones.
    cost = LLMEngineCost(_engine(kv_capacity_tokens=1200))
    arrivals = [
        Arrival(0.0, prompt_tokens=1100, output_tokens=2, prefix_blocks=(1, 2, 3)),
        Arrival(1.0, prompt_tokens=1100, output_tokens=2, prefix_blocks=(5, 6, 7)),
        Arrival(2.0, prompt_tokens=1100, output_tokens=2, prefix_blocks=(1, 2, 3)),
        Arrival(3.0, prompt_tokens=1100, output_tokens=2, prefix_blocks=(1, 2, 3)),
    ]
    recs = run_fleet(arrivals, cost, CFG, FleetSettings()).records
    assert [r.prefix_hit_tokens for r in recs] == [0, 0, 0, 1024]
    assert all(r.status == "ok" for r in recs)


def test_the_engine_queue_bypasses_tritons_batcher_queue_and_keeps_priority_order() -> None:
    strict = BatcherConfig(
        max_batch_size=1,
        priority_levels=3,
        default_priority_level=2,
        default_queue_policy=QueuePolicy("REJECT", default_timeout_us=1000, max_queue_size=1),
    )
    cost = LLMEngineCost(_engine(max_num_seqs=1))
    arrivals = [
        Arrival(0.0, priority=3, prompt_tokens=500, output_tokens=50),
        Arrival(0.001, priority=3, prompt_tokens=500, output_tokens=50),
        Arrival(0.002, priority=3, prompt_tokens=500, output_tokens=50),
        Arrival(0.003, priority=1, prompt_tokens=500, output_tokens=50),
    ]
    recs = simulate(arrivals, strict, cost)
    # Triton's 1 ms timeout and queue of one would reject these; the decoupled backend has
    # handed them to the engine, which serves them all, the urgent one next.
    assert all(r.status == "ok" for r in recs)
    order = sorted(range(4), key=lambda i: recs[i].dispatch_s or 0.0)
    assert order == [0, 3, 1, 2]


def test_a_request_larger_than_the_kv_pool_is_rejected() -> None:
    cost = LLMEngineCost(_engine(kv_capacity_tokens=160, kv_block_tokens=16))
    rec = simulate([Arrival(0.0, prompt_tokens=150, output_tokens=50)], CFG, cost)[0]
    assert (rec.status, rec.reject_reason) == ("rejected", "exceeds KV capacity")


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


def test_mooncake_block_ids_reach_the_prefix_cache(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    rows = [
        {"timestamp": 2000, "input_length": 1100, "output_length": 2, "hash_ids": [1, 2, 9]},
        {"timestamp": 0, "input_length": 1100, "output_length": 2, "hash_ids": [1, 2, 3]},
    ]
    trace.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    t, p, o = read_trace(trace)
    blocks = read_prefix_blocks(trace)
    assert list(t) == [0.0, 2.0]
    assert blocks == [(1, 2, 3), (1, 2, 9)]  # in read_trace's (time) order
    arrivals = [
        Arrival(float(ti), prompt_tokens=int(pi), output_tokens=int(oi), prefix_blocks=b)
        for ti, pi, oi, b in zip(t, p, o, blocks, strict=True)
    ]
    res = run_fleet(arrivals, LLMEngineCost(_engine()), CFG, FleetSettings())
    assert [r.prefix_hit_tokens for r in res.records] == [0, 1024]


def test_bad_hash_ids_are_a_clear_error(tmp_path: Path) -> None:
    trace = tmp_path / "bad.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": ["x"]}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: hash_ids"):
        read_prefix_blocks(trace)


def test_the_shipped_mooncake_trace_reuses_prefixes() -> None:
    path = mooncake_trace()
    t, p, o = read_trace(path)
    blocks = read_prefix_blocks(path)
    assert len(blocks) == len(t) and sum(map(len, blocks)) > len(t)
    keep = t < 600.0
    arrivals = [
        Arrival(float(ti), prompt_tokens=int(pi), output_tokens=int(oi), prefix_blocks=b)
        for ti, pi, oi, b, k in zip(t, p, o, blocks, keep, strict=True)
        if k
    ]
    cost = LLMEngineCost(_engine())
    cached = run_fleet(arrivals, cost, CFG, FleetSettings(initial_replicas=2))
    blind = run_fleet(
        [replace(a, prefix_blocks=()) for a in arrivals], cost, CFG, FleetSettings(initial_replicas=2)
    )
    assert cached.prefix_hit_rate is not None and cached.prefix_hit_rate > 0.05
    assert blind.prefix_hit_rate == 0.0
    # Skipped prefill shows up as shorter time to first token.
    assert sum(r.ttft_s for r in cached.records) < 0.95 * sum(r.ttft_s for r in blind.records)
