"""The twin's KServe gRPC inference endpoint: the real gateway reaches the twin as it reaches Triton.

The part of Triton's ``GRPCInferenceService`` the gateway uses, over the twin's fleet, so the
request path (priorities, streaming, rejections, cancellation) is exercised unchanged against the
simulated Triton. Details: docs/demo.md#the-request-path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import threading
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from phoenix_operator.demo.twin import DigitalTwin
from phoenix_operator.sim.request import RequestRecord

#: Triton's texts for what the twin's fleet rejects (the gateway reads them to pick 429 or 504).
REJECTION_TEXT = {
    "timeout": "Request timeout expired",
    "queue full": "Exceeds maximum queue size",
    "no ready replica": "Server not ready: no ready model instance",
}
#: Words of the first and the final response (the twin streams a short answer, not the tokens);
#: the first names the twin's record, so the demo's client can pair its timings with the twin's.
FIRST_TEXT = "Thanks [twin request {id}]"
REST_TEXT = " for your question; here is what to do."
#: Tokens per word when the prompt's length is estimated from its text.
TOKENS_PER_WORD = 1.3


class TokenCounts:
    """``(prompt_tokens, output_tokens)`` handed out in order; thread-safe; empty = ``None``."""

    def __init__(self, counts: list[tuple[int, int]] | None = None) -> None:
        self._counts: deque[tuple[int, int]] = deque(counts or [])
        self._lock = threading.Lock()

    def take(self) -> tuple[int, int] | None:
        with self._lock:
            return self._counts.popleft() if self._counts else None


@dataclass
class _Event:
    kind: str  # first_token | finished | rejected
    reason: str = ""


class _Watcher:
    """Hands the simulation's news to the call's event loop (never blocks the simulation)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[_Event] = asyncio.Queue()

    def _put(self, event: _Event) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def first_token(self, rec: RequestRecord) -> None:
        self._put(_Event("first_token"))

    def finished(self, rec: RequestRecord) -> None:
        self._put(_Event("finished"))

    def rejected(self, rec: RequestRecord, reason: str) -> None:
        self._put(_Event("rejected", reason))


def _bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def _first_bytes(raw: bytes) -> bytes:
    """The first element of a serialized BYTES tensor."""
    if len(raw) < 4:
        return b""
    (size,) = struct.unpack_from("<I", raw, 0)
    return raw[4 : 4 + size]


@dataclass(frozen=True)
class ParsedRequest:
    prompt: str
    max_tokens: int | None
    priority: int
    timeout_us: int
    output_name: str


def parse_request(request: service_pb2.ModelInferRequest) -> ParsedRequest:
    """The prompt, ``max_tokens``, priority and timeout of a ``phoenix`` or ``vllm`` layout request."""
    prompt, max_tokens = "", None
    for index, tensor in enumerate(request.inputs):
        raw = request.raw_input_contents[index] if index < len(request.raw_input_contents) else b""
        if tensor.name in ("PROMPT", "text_input"):
            prompt = _first_bytes(raw).decode("utf-8", errors="replace")
        elif tensor.name == "MAX_TOKENS" and len(raw) >= 4:
            max_tokens = int(np.frombuffer(raw[:4], dtype=np.int32)[0])
        elif tensor.name == "sampling_parameters":
            try:
                value = json.loads(_first_bytes(raw) or b"{}").get("max_tokens")
                max_tokens = int(value) if value is not None else None
            except (ValueError, AttributeError, TypeError):
                max_tokens = None
    params = request.parameters
    priority = int(params["priority"].uint64_param) if "priority" in params else 0
    timeout_us = int(params["timeout"].int64_param) if "timeout" in params else 0
    output = request.outputs[0].name if request.outputs else "TEXT_OUTPUT"
    return ParsedRequest(prompt, max_tokens, priority, timeout_us, output)


class TwinInferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Triton's inference RPCs the gateway calls, served by the twin."""

    def __init__(
        self, twin: DigitalTwin, class_of_level: Mapping[int, str], default_level: int, counts: TokenCounts
    ) -> None:
        self.twin = twin
        self.class_of_level = dict(class_of_level)
        self.default_level = default_level
        self.counts = counts

    async def ServerReady(self, request: Any, context: Any) -> service_pb2.ServerReadyResponse:
        return service_pb2.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> service_pb2.ModelReadyResponse:
        return service_pb2.ModelReadyResponse(ready=request.name == self.twin.model_name)

    async def ModelConfig(self, request: Any, context: Any) -> service_pb2.ModelConfigResponse:
        if request.name != self.twin.model_name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{request.name}'")
        config = self.twin.model_config()
        reply = service_pb2.ModelConfigResponse()
        reply.config.name = self.twin.model_name
        reply.config.backend = self.twin.backend
        reply.config.max_batch_size = int(config.get("max_batch_size", 0))
        return reply

    def _response(self, request: Any, name: str, text: str, final: bool) -> Any:
        response = service_pb2.ModelInferResponse(model_name=self.twin.model_name, id=request.id)
        if text:
            out = response.outputs.add()
            out.name = name
            out.datatype = "BYTES"
            out.shape.extend([1])
            response.raw_output_contents.append(_bytes_tensor([text.encode()]))
        response.parameters["triton_final_response"].bool_param = final
        return service_pb2.ModelStreamInferResponse(infer_response=response)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        async for request in request_iterator:
            if request.model_name != self.twin.model_name:
                yield service_pb2.ModelStreamInferResponse(
                    error_message=f"Request for unknown model: '{request.model_name}' is not found"
                )
                return
            parsed = parse_request(request)
            level = parsed.priority or self.default_level
            klass = self.class_of_level.get(level, f"p{level}")
            taken = self.counts.take()
            if taken is not None:
                prompt_tokens, output_tokens = taken
            else:
                prompt_tokens = round(len(parsed.prompt.split()) * TOKENS_PER_WORD)
                output_tokens = parsed.max_tokens or 16
            if parsed.max_tokens:
                output_tokens = min(output_tokens, parsed.max_tokens)
            watcher = _Watcher(asyncio.get_running_loop())
            rec = self.twin.submit_live(
                priority=parsed.priority,
                klass=klass,
                prompt_tokens=prompt_tokens,
                output_tokens=output_tokens,
                watcher=watcher,
                timeout_us=parsed.timeout_us,
            )
            try:
                sent_first = False
                while True:
                    event = await watcher.queue.get()
                    if event.kind == "rejected":
                        text = REJECTION_TEXT.get(event.reason, event.reason)
                        yield service_pb2.ModelStreamInferResponse(error_message=text)
                        return
                    if event.kind == "first_token" and not sent_first:
                        sent_first = True
                        first = FIRST_TEXT.format(id=rec.id)
                        yield self._response(request, parsed.output_name, first, final=False)
                    elif event.kind == "finished":
                        first = "" if sent_first else FIRST_TEXT.format(id=rec.id)
                        yield self._response(request, parsed.output_name, first + REST_TEXT, final=True)
                        return
            finally:
                self.twin.forget_live(rec)  # a no-op once finished; after a cancel, nobody listens
            return  # one request per stream, as the gateway sends


class TwinGrpcServer:
    """The endpoint on a free loopback port, served from a background thread; a context manager."""

    def __init__(
        self,
        twin: DigitalTwin,
        class_of_level: Mapping[int, str],
        default_level: int = 0,
        counts: TokenCounts | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.service = TwinInferenceService(twin, class_of_level, default_level, counts or TokenCounts())
        self.host = host
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: Any = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> TwinGrpcServer:
        started = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            server = grpc.aio.server()
            service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.service, server)
            self.port = server.add_insecure_port(f"{self.host}:0")
            await server.start()
            self._server = server

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(serve())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                started.set()
                return
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="twin-grpc", daemon=True)
        self._thread.start()
        started.wait(30)
        if failure or not self.port:
            raise RuntimeError(
                f"the twin's gRPC endpoint did not start: {failure[0] if failure else 'timeout'}"
            )
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._server is not None:
            future = asyncio.run_coroutine_threadsafe(self._server.stop(grace=1.0), self._loop)
            with contextlib.suppress(Exception):  # stopping regardless
                future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> TwinGrpcServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
