"""The H100 / Llama-2-7B profile: values match their sources and give sane totals."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from phoenix_operator.sim import LLMEngineCost, load_profile

VIDUR_CSV = Path(__file__).resolve().parent / "data" / "calibration" / "vidur-h100-llama-2-7b-mlp.csv"
OPS = (
    "emb",
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)


def test_profile_loads_with_its_batching_and_classes() -> None:
    prof = load_profile()
    assert prof.name == "h100-llama2-7b"
    assert prof.batching.priority_levels == 3
    assert dict(prof.classes) == {"urgent": 1, "standard": 2, "bulk": 3}
    assert 100 <= prof.startup_s <= 135
    assert prof.price_per_gpu_hour_usd > 0
    with pytest.raises(FileNotFoundError):
        load_profile("no-such-profile")


def test_kv_bytes_per_token_is_llama2_7b_fp16() -> None:
    prof = load_profile()
    layers, kv_heads, head_dim, fp16 = 32, 32, 128, 2
    assert prof.engine.kv_bytes_per_token == 2 * layers * kv_heads * head_dim * fp16
    # ~56 GiB of KV at 0.5 MiB per token.
    assert prof.engine.kv_capacity_tokens * prof.engine.kv_bytes_per_token / 2**30 == pytest.approx(
        54.7, abs=2
    )


def test_linear_table_is_the_vidur_measurement() -> None:
    table = load_profile().engine.linear_ms_by_tokens
    measured: dict[int, float] = {}
    with VIDUR_CSV.open() as fh:
        for row in csv.DictReader(fh):
            if int(row["num_tensor_parallel_workers"]) == 1:
                measured[int(row["num_tokens"])] = 32 * sum(
                    float(row[f"time_stats.{op}.median"]) for op in OPS
                )
    for tokens, ms in table.items():
        assert ms == pytest.approx(measured[tokens], abs=0.01), tokens


def test_cost_model_totals_are_plausible_for_a_7b_model_on_h100() -> None:
    cost = LLMEngineCost(load_profile())
    # Single-stream decode ~ 100-160 tok/s for fp16 7B on H100.
    assert 100 < 1 / cost.step_time(1, 1000) < 160
    # Batch 64 at input 128 / output 128: TensorRT-LLM 0.5.0 reports 9,193 out tok/s in FP8;
    # fp16 should land at roughly half to two thirds of it.
    prefill = cost.prefill_time(64 * 128, 64 * 128.0**2, 0, 0)
    decode = sum(cost.step_time(64, 64 * (128 + i)) for i in range(127))
    tok_s = 64 * 128 / (prefill + decode)
    assert 3_500 < tok_s < 7_000
    # Prefill of a 1,024-token prompt: ~20-30 ms.
    assert 0.020 < cost.prefill_time(1024, 1024.0**2, 0, 0) < 0.030
