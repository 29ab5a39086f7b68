"""Cost models: how long a Triton model instance is busy with a batch.

``BlockingBatchCost`` mirrors the fidelity harness's real Python-backend model, so the two compare
like with like; ``LLMEngineCost`` models an in-flight-batching LLM on one GPU from a profile.
See docs/simulator.md ("Cost models").
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from phoenix_operator.sim.profile import EngineProfile, Profile


@dataclass(frozen=True)
class BlockingBatchCost:
    """Instance busy for ``a_s + b_s × rows`` per executed batch."""

    a_s: float
    b_s: float

    def __post_init__(self) -> None:
        if self.a_s < 0 or self.b_s < 0:
            raise ValueError("batch cost coefficients must be >= 0")

    def batch_time(self, rows: int) -> float:
        return self.a_s + self.b_s * rows


class LLMEngineCost:
    """Iteration times of an LLM engine, from an :class:`EngineProfile`.

    ``linear(tokens)`` is the time of the non-attention layers for a forward pass over that many
    tokens (Vidur's per-operator H100 measurements, interpolated; extrapolated linearly past the
    table). Attention is added from first principles: prefill attention ∝ Σ prompt² (compute
    bound), decode attention ∝ KV tokens read (memory bound).
    """

    def __init__(self, profile: EngineProfile | Profile) -> None:
        if isinstance(profile, Profile):
            profile = profile.engine
        self.profile = profile
        pts = sorted(profile.linear_ms_by_tokens.items())
        self._xs = np.array([p[0] for p in pts], dtype=float)
        self._ys = np.array([p[1] for p in pts], dtype=float) * 1e-3
        if len(self._xs) < 2:
            raise ValueError("linear_ms_by_tokens needs at least two points")
        self._tail_slope = float((self._ys[-1] - self._ys[-2]) / (self._xs[-1] - self._xs[-2]))
        # Plain floats for the per-prefill lookup (numpy per scalar call costs microseconds).
        self._xs_list = [float(x) for x in self._xs]
        self._ys_list = [float(y) for y in self._ys]
        # Decode iterations run 1 token per active sequence: tabulate for speed.
        n = np.arange(profile.max_num_seqs + 2, dtype=float)
        self._decode_linear = [float(v) for v in self._linear_array(n)]
        self._overhead = profile.iteration_overhead_s
        self._attn_kv = profile.decode_attention_s_per_kv_token
        self._attn_sq = profile.prefill_attention_s_per_token_sq

    def _linear_array(self, tokens: np.ndarray) -> np.ndarray:
        out = np.interp(tokens, self._xs, self._ys)
        beyond = tokens > self._xs[-1]
        out[beyond] = self._ys[-1] + (tokens[beyond] - self._xs[-1]) * self._tail_slope
        return out

    def linear(self, tokens: int) -> float:
        """Non-attention forward time for ``tokens`` tokens, seconds."""
        if tokens <= 0:
            return 0.0
        if tokens < len(self._decode_linear):
            return self._decode_linear[tokens]
        xs, ys = self._xs_list, self._ys_list
        i = bisect_right(xs, tokens)
        if i >= len(xs):
            return ys[-1] + (tokens - xs[-1]) * self._tail_slope
        if i == 0:
            return ys[0]
        x0, x1 = xs[i - 1], xs[i]
        return ys[i - 1] + (ys[i] - ys[i - 1]) * (tokens - x0) / (x1 - x0)

    def step_time(self, n_active: int, kv_tokens: float) -> float:
        """One decode iteration with ``n_active`` sequences holding ``kv_tokens`` KV tokens."""
        lin = self._decode_linear[n_active] if n_active < len(self._decode_linear) else self.linear(n_active)
        return self._overhead + lin + self._attn_kv * kv_tokens

    def prefill_time(
        self, prompt_tokens: int, prompt_sq_sum: float, n_active: int, kv_tokens: float
    ) -> float:
        """A prefill iteration for a batch of prompts, with the running decode batch riding along."""
        return (
            self._overhead
            + self.linear(prompt_tokens + n_active)
            + self._attn_sq * prompt_sq_sum
            + self._attn_kv * kv_tokens
        )

    def clip(self, prompt: int, output: int) -> tuple[int, int]:
        """Fit a request into the model's context window (prompt first, then output)."""
        max_len = self.profile.max_model_len
        p = max(1, min(prompt, max_len - 1))
        o = max(1, min(output, max_len - p))
        return p, o

    def service_time(self, prompt: float, output: float, prompt_sq: float) -> float:
        """GPU seconds one average request costs when the engine runs at its KV-limited concurrency.

        Used to size fleets (static baselines, the oracle's first guess): prefill alone plus the
        request's share of the decode iterations it takes part in.
        """
        prof = self.profile
        concurrency = max(
            1, min(prof.max_num_seqs, int(prof.kv_capacity_tokens // max(prompt + output, 1.0)))
        )
        kv = concurrency * (prompt + output / 2.0)
        step = self.step_time(concurrency, kv)
        prefill = self._overhead + self.linear(math.ceil(prompt)) + self._attn_sq * prompt_sq
        return prefill + max(output - 1.0, 0.0) * step / concurrency
