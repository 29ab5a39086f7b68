"""Streaming generation from Triton over gRPC (``grpc.aio`` with tritonclient's generated stubs).

The gateway drives Triton's ``ModelStreamInfer`` itself instead of going through
``tritonclient.grpc.aio.InferenceServerClient.stream_infer`` because it needs two request
parameters that wrapper refuses (reserved names): ``triton_enable_empty_final_response``, without
which a decoupled model that ends with a flag-only response (vLLM does) leaves the stream open,
and full control of the call object, whose ``cancel()`` is what tells Triton a client left.
One channel is shared by all requests; each request is its own short bidirectional stream.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import deserialize_bytes_tensor

from phoenix_operator.gateway.errors import RATE_LIMIT, UPSTREAM_ERROR, UPSTREAM_TIMEOUT, GatewayError
from phoenix_operator.gateway.settings import ModelIO


def upstream_unavailable(detail: str) -> GatewayError:
    return GatewayError(
        503, f"the model server is unavailable: {detail}", UPSTREAM_ERROR, None, "upstream_unavailable"
    )


def queue_timeout(detail: str) -> GatewayError:
    return GatewayError(
        504,
        f"the request waited longer than its priority class allows in the model server's queue: {detail}",
        UPSTREAM_TIMEOUT,
        None,
        "queue_timeout",
    )


def queue_full(detail: str) -> GatewayError:
    return GatewayError(
        429,
        f"the model server's queue for this priority class is full: {detail}",
        RATE_LIMIT,
        None,
        "queue_full",
    )


def deadline_exceeded(seconds: float) -> GatewayError:
    return GatewayError(
        504, f"the request did not finish within {seconds:g} s", UPSTREAM_TIMEOUT, None, "request_timeout"
    )


def classify_triton_error(message: str) -> GatewayError:
    """Map Triton's error text to the client's answer (Triton reports these only as text)."""
    lowered = message.lower()
    if "timeout" in lowered or "timed out" in lowered:
        return queue_timeout(message)
    if "exceeds maximum queue size" in lowered or "queue size" in lowered:
        return queue_full(message)
    if "unknown model" in lowered or "not ready" in lowered or "is not found" in lowered:
        return upstream_unavailable(message)
    return GatewayError(
        502, f"the model server failed the request: {message}", UPSTREAM_ERROR, None, "upstream_error"
    )


def _bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


class TritonChat:
    """A reusable client for one decoupled text-generation model."""

    def __init__(self, url: str, model: str, io: ModelIO) -> None:
        self.url = url
        self.model = model
        self.io = io
        self._channel = grpc.aio.insecure_channel(
            url,
            options=[
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._batched: bool | None = None

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def not_ready(self, timeout_s: float) -> str | None:
        """``None`` when server and model are ready, else why not (for /readyz)."""
        try:
            server = await self._stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=timeout_s)
            if not server.ready:
                return f"Triton at {self.url} is not ready"
            model = await self._stub.ModelReady(
                service_pb2.ModelReadyRequest(name=self.model), timeout=timeout_s
            )
            if not model.ready:
                return f"model {self.model!r} is not ready on Triton at {self.url}"
        except grpc.aio.AioRpcError as exc:
            return f"Triton at {self.url} unreachable: {exc.code().name}: {exc.details()}"
        return None

    async def _is_batched(self, timeout_s: float) -> bool:
        """Models with ``max_batch_size > 0`` take a leading batch dimension on every input."""
        if self._batched is None:
            try:
                reply = await self._stub.ModelConfig(
                    service_pb2.ModelConfigRequest(name=self.model), timeout=timeout_s
                )
            except grpc.aio.AioRpcError as exc:
                raise self._rpc_error(exc, timeout_s) from None
            self._batched = reply.config.max_batch_size > 0
        return self._batched

    def _request(
        self,
        request_id: str,
        prompt: str,
        max_tokens: int,
        priority: int,
        timeout_us: int | None,
        batched: bool,
    ) -> service_pb2.ModelInferRequest:
        request = service_pb2.ModelInferRequest(model_name=self.model, id=request_id)
        shape = [1, 1] if batched else [1]

        def add(name: str, datatype: str, raw: bytes) -> None:
            tensor = request.inputs.add()
            tensor.name = name
            tensor.datatype = datatype
            tensor.shape.extend(shape)
            request.raw_input_contents.append(raw)

        add(self.io.prompt, "BYTES", _bytes_tensor([prompt.encode()]))
        if self.io.max_tokens:
            add(self.io.max_tokens, "INT32", np.array([max_tokens], dtype=np.int32).tobytes())
        if self.io.stream:
            add(self.io.stream, "BOOL", np.array([True], dtype=np.bool_).tobytes())
        if self.io.sampling_parameters:
            sampling = json.dumps({"max_tokens": max_tokens}).encode()
            add(self.io.sampling_parameters, "BYTES", _bytes_tensor([sampling]))
        request.outputs.add().name = self.io.output
        request.parameters["triton_enable_empty_final_response"].bool_param = True
        if priority > 0:
            request.parameters["priority"].uint64_param = priority
        if timeout_us:
            request.parameters["timeout"].int64_param = timeout_us
        return request

    def _rpc_error(self, exc: grpc.aio.AioRpcError, deadline_s: float) -> GatewayError:
        code = exc.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return deadline_exceeded(deadline_s)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            return upstream_unavailable(f"{code.name}: {exc.details()}")
        return classify_triton_error(f"{code.name}: {exc.details()}")

    async def generate(
        self,
        request_id: str,
        prompt: str,
        *,
        max_tokens: int,
        priority: int,
        timeout_us: int | None,
        deadline_s: float,
    ) -> AsyncGenerator[str, None]:
        """Text deltas as Triton streams them; raises :class:`GatewayError` on upstream failure.

        Closing the generator (or cancelling the task iterating it) cancels the gRPC call, and
        Triton then cancels the request: dropped from its queue, or ``is_cancelled()`` in the model.
        """
        batched = await self._is_batched(min(deadline_s, 10.0))
        request = self._request(request_id, prompt, max_tokens, priority, timeout_us, batched)
        held_open = asyncio.Event()

        async def requests() -> AsyncIterator[Any]:
            yield request
            await held_open.wait()  # the stream stays open until this call is done with it

        call = self._stub.ModelStreamInfer(requests(), timeout=deadline_s)
        try:
            async for reply in call:
                if reply.error_message:
                    raise classify_triton_error(reply.error_message)
                response = reply.infer_response
                for index, output in enumerate(response.outputs):
                    if output.name != self.io.output or index >= len(response.raw_output_contents):
                        continue
                    for value in deserialize_bytes_tensor(response.raw_output_contents[index]).reshape(-1):
                        text = (
                            value.decode("utf-8", errors="replace")
                            if isinstance(value, bytes)
                            else str(value)
                        )
                        if text:
                            yield text
                if response.parameters["triton_final_response"].bool_param:
                    return
            raise GatewayError(
                502,
                "the model server closed the stream before its final response",
                UPSTREAM_ERROR,
                None,
                "upstream_error",
            )
        except grpc.aio.AioRpcError as exc:
            raise self._rpc_error(exc, deadline_s) from None
        finally:
            call.cancel()
            held_open.set()
