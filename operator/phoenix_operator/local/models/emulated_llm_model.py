"""Triton Python-backend model whose execute() costs ``a + b x rows`` like one GPU step.

Runs inside Triton's Python-backend stub; the operator never imports it. A negative ``PROMPT_TOKENS``
raises, so its batch counts as a real Triton failure. Parameters and why: docs/fidelity.md, "The
real side: a local tritonserver and the emulated_llm model".
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _param(config: dict[str, Any], key: str, default: float) -> float:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return float(value) if value not in (None, "") else default


class TritonPythonModel:
    """Sleeps ``a + b x rows`` per batch; one response per request."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.base_s = _param(config, "step_base_ms", 20.0) / 1000.0
        self.per_row_s = _param(config, "step_per_row_ms", 2.0) / 1000.0
        self.output_tokens = int(_param(config, "output_tokens", 16.0))

    def execute(self, requests: list[Any]) -> list[Any]:
        prompts = [pb_utils.get_input_tensor_by_name(r, "PROMPT_TOKENS").as_numpy() for r in requests]
        rows = sum(int(p.shape[0]) if p.ndim > 1 else 1 for p in prompts)
        time.sleep(self.base_s + self.per_row_s * rows)
        if any((prompt < 0).any() for prompt in prompts):
            raise pb_utils.TritonModelException("negative PROMPT_TOKENS: failing this batch on purpose")
        responses = []
        for prompt in prompts:
            shape = (*prompt.shape[:-1], 1) if prompt.ndim > 1 else (1,)
            tokens = np.full(shape, self.output_tokens, dtype=np.int32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("TOKENS", tokens)]))
        return responses

    def finalize(self) -> None:
        """Nothing to release; present so Triton's unload path is explicit."""
