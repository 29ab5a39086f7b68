"""Triton Python-backend *decoupled* model that streams a chat answer like an LLM would.

Runs inside Triton's Python-backend stub (the operator never imports it). It sleeps per batch and
per token, so a busy instance fills Triton's priority queues as a GPU would, and echoes the prompt
so tests see retrieved passages reach the model. Parameters and tensor names:
docs/gateway.md#the-emulated_chat-model-local-triton.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _param(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return str(value) if value not in (None, "") else default


def _first(tensor: Any) -> Any:
    return tensor.as_numpy().reshape(-1)[0]


class _Stream:
    """One request's generation state."""

    def __init__(self, request: Any, words: list[str], max_tokens: int) -> None:
        self.request = request
        self.sender = request.get_response_sender()
        self.words = words
        self.max_tokens = max_tokens
        self.sent = 0
        self.cancelled = False


class TritonPythonModel:
    """Prefill, then one echoed word per request per step; stops early when cancelled."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.prefill_s = float(_param(config, "prefill_ms", "50")) / 1000.0
        self.per_token_s = float(_param(config, "per_token_ms", "10")) / 1000.0
        self.default_max_tokens = int(_param(config, "default_max_tokens", "16"))
        self.events_path = _param(config, "events_path", "")
        self.prompt_input = _param(config, "prompt_input", "PROMPT")
        self.max_tokens_input = _param(config, "max_tokens_input", "MAX_TOKENS")
        self.text_output = _param(config, "text_output", "TEXT_OUTPUT")
        self.sampling_input = _param(config, "sampling_parameters_input", "")
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def _max_tokens(self, request: Any) -> int:
        tensor = pb_utils.get_input_tensor_by_name(request, self.max_tokens_input)
        if tensor is not None:
            return max(0, int(_first(tensor)))
        if self.sampling_input:
            sampling = pb_utils.get_input_tensor_by_name(request, self.sampling_input)
            if sampling is not None:
                raw = _first(sampling)
                params = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
                return max(0, int(params.get("max_tokens", self.default_max_tokens)))
        return self.default_max_tokens

    def _token(self, stream: _Stream, final: bool) -> None:
        word = stream.words[stream.sent % len(stream.words)]
        text = (word if stream.sent == 0 else " " + word).encode()
        data = np.array([[text]] if self.batched else [text], dtype=np.object_)
        response = pb_utils.InferenceResponse([pb_utils.Tensor(self.text_output, data)])
        flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        stream.sender.send(response, flags=flags)
        stream.sent += 1

    def _record(self, stream: _Stream) -> None:
        if not self.events_path:
            return
        event = {
            "id": stream.request.request_id(),
            "tokens": stream.sent,
            "max_tokens": stream.max_tokens,
            "cancelled": stream.cancelled,
            "time": time.time(),
        }
        with open(self.events_path, "a") as out:
            out.write(json.dumps(event) + "\n")

    def execute(self, requests: list[Any]) -> None:
        streams = []
        for request in requests:
            raw = _first(pb_utils.get_input_tensor_by_name(request, self.prompt_input))
            prompt = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            streams.append(_Stream(request, prompt.split() or ["..."], self._max_tokens(request)))
        time.sleep(self.prefill_s)
        active = list(streams)
        while active:
            still = []
            for stream in active:
                if stream.sender.is_cancelled():
                    stream.cancelled = True
                    stream.sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                    self._record(stream)
                elif stream.sent >= stream.max_tokens:
                    stream.sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                    self._record(stream)
                else:
                    final = stream.sent + 1 >= stream.max_tokens
                    self._token(stream, final)
                    if final:
                        self._record(stream)
                    else:
                        still.append(stream)
            active = still
            if active:
                time.sleep(self.per_token_s)
        return None

    def finalize(self) -> None:
        """Nothing to release; present so Triton's unload path is explicit."""
