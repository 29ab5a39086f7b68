"""The gateway's ASGI application: OpenAI-compatible chat in front of Triton.

The chat route is a plain ASGI callable, not a Starlette handler, because it must watch the client's
connection while it waits on Triton: a client that leaves cancels the upstream call. Request path,
thread pools and errors: docs/gateway.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message as AsgiMessage
from starlette.types import Receive, Scope, Send

from phoenix_operator.api.models import PRIORITY_HEADER
from phoenix_operator.gateway import protocol
from phoenix_operator.gateway.errors import (
    CLIENT_CLOSED_STATUS,
    CLIENT_DISCONNECT,
    INVALID_REQUEST,
    SERVER_ERROR,
    UPSTREAM_TIMEOUT,
    GatewayError,
    internal_error,
    invalid,
)
from phoenix_operator.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from phoenix_operator.gateway.retrieval import PassageSearch
from phoenix_operator.gateway.settings import GatewaySettings
from phoenix_operator.gateway.upstream import TritonChat, deadline_exceeded

log = logging.getLogger("phoenix_operator.gateway")
access_log = logging.getLogger("phoenix_operator.gateway.access")

INTENT_HEADER = "x-phoenix-intent"
#: Class label of a request that failed before it was classified.
UNCLASSIFIED = "unclassified"


class EmbedderLike(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray: ...


class ClassifierLike(Protocol):
    def predict(self, text: str, embedding: np.ndarray | None = None) -> Any: ...


class _ClientGone(Exception):
    """The client disconnected while its request body was still arriving."""


@dataclass
class RequestState:
    """What one request learnt on its way, for headers, metrics and the access log."""

    id: str
    arrival: float
    priority_class: str = UNCLASSIFIED
    level: int = 0
    intent: str = ""
    confidence: float | None = None
    route_reason: str = ""
    stream: bool = False
    stages: dict[str, float] = field(default_factory=dict)
    ttft: float | None = None
    handoff: float | None = None
    completion_tokens: int = 0
    passages: int = 0
    started: bool = False

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = [(b"x-request-id", self.id.encode())]
        if self.priority_class != UNCLASSIFIED:
            out.append((PRIORITY_HEADER.encode(), self.priority_class.encode()))
        if self.intent:
            out.append((INTENT_HEADER.encode(), self.intent.encode()))
        timing = [f"{k};dur={v * 1000:.2f}" for k, v in self.stages.items() if k != "first_token"]
        if self.handoff is not None:
            timing.append(f"handoff;dur={self.handoff * 1000:.2f}")
        if timing:
            out.append((b"server-timing", ", ".join(timing).encode()))
        return out


class Gateway:
    """State shared by all requests: settings, models, clients, pools, metrics."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        embedder: EmbedderLike | None = None,
        classifier: ClassifierLike | None = None,
    ) -> None:
        self.settings = settings
        self.spec = settings.spec
        self.metrics = GatewayMetrics()
        self.embedder = embedder
        self.classifier = classifier
        self.models_error: str | None = None
        self.created = int(time.time())
        self.compute = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="phoenix-compute")
        self.io = ThreadPoolExecutor(settings.io_threads, thread_name_prefix="phoenix-io")
        self.triton: TritonChat | None = None
        self.search: PassageSearch | None = None
        self._loading: asyncio.Future[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        self.triton = TritonChat(s.triton_url, s.triton_model, s.io)
        if s.retrieval_enabled and self.spec.retrieval is not None and s.milvus_uri:
            self.search = PassageSearch(
                s.milvus_uri,
                self.spec.retrieval.collection,
                self.spec.gateway.top_k,
                token=s.milvus_token,
                db_name=s.milvus_db,
                timeout_s=max(s.probe_timeout_s, 5.0),
            )
        elif self.spec.retrieval is not None:
            log.warning("spec.retrieval is set but no --milvus-uri was given: answering without retrieval")
        if self.embedder is None or self.classifier is None:
            self._loading = asyncio.get_running_loop().run_in_executor(self.io, self._load_models)

    def _load_models(self) -> None:
        """Load the embedder and classifier (seconds; longer when the default classifier is first trained)."""
        try:
            from phoenix_operator.ml.classifier import IntentClassifier, default_classifier_dir
            from phoenix_operator.ml.embedder import Embedder

            embedder = Embedder.load(threads=1)
            directory = self.settings.classifier_dir or default_classifier_dir()
            classifier = IntentClassifier.load(directory)
        except Exception as exc:  # anything here means "not ready", reported on /readyz
            log.exception("loading the embedder/classifier failed")
            self.models_error = f"{type(exc).__name__}: {exc}"
            return
        self.embedder, self.classifier = embedder, classifier
        log.info("embedder and classifier loaded (classifier from %s)", directory)

    async def stop(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        if self.triton is not None:
            await self.triton.close()
        if self.search is not None:
            await asyncio.get_running_loop().run_in_executor(self.io, self.search.close)
        self.compute.shutdown(wait=False, cancel_futures=True)
        self.io.shutdown(wait=False, cancel_futures=True)

    @property
    def models_loaded(self) -> bool:
        return self.embedder is not None and self.classifier is not None

    # -- small endpoints ---------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(self, request: Request) -> Response:
        """200 when classifier, Triton (server and model) and Milvus (if retrieval is on) are ready."""
        timeout = self.settings.probe_timeout_s
        checks: dict[str, str] = {
            "classifier": "ok" if self.models_loaded else (self.models_error or "loading"),
        }

        async def triton() -> str:
            assert self.triton is not None
            return await self.triton.not_ready(timeout) or "ok"

        async def milvus() -> str:
            assert self.search is not None
            loop = asyncio.get_running_loop()
            try:
                return (
                    await asyncio.wait_for(loop.run_in_executor(self.io, self.search.not_ready), timeout * 2)
                    or "ok"
                )
            except TimeoutError:
                return f"Milvus at {self.search.uri} did not answer within {timeout * 2:g} s"

        probes: dict[str, Awaitable[str]] = {"triton": triton()}
        if self.search is not None:
            probes["milvus"] = milvus()
        for name, result in zip(probes, await asyncio.gather(*probes.values()), strict=True):
            checks[name] = result
        not_ready = sorted(k for k, v in checks.items() if v != "ok")
        body = {"ready": not not_ready, "not_ready": not_ready, "checks": checks}
        return JSONResponse(body, status_code=503 if not_ready else 200)

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)

    async def models(self, request: Request) -> Response:
        return JSONResponse(protocol.models_list(self.settings.served_model_name, self.created))

    async def model(self, request: Request) -> Response:
        name = request.path_params["model_id"]
        if name != self.settings.served_model_name:
            error = protocol.unknown_model(name, self.settings.served_model_name)
            return JSONResponse(error.body(), status_code=error.status)
        return JSONResponse(protocol.model_object(name, self.created))

    # -- chat --------------------------------------------------------------------------------
    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = RequestState(id=f"chatcmpl-{uuid.uuid4().hex}", arrival=time.perf_counter())
        try:
            body = await self._read_body(scope, receive)
        except _ClientGone:
            self._finish(state, CLIENT_CLOSED_STATUS, CLIENT_DISCONNECT)
            return
        except GatewayError as error:
            await self._send_error(send, state, error)
            return
        work = asyncio.ensure_future(self._serve(state, body, Headers(scope=scope), send))
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                work.cancel()  # the client left: this cancels the Triton call with it
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                self._finish(state, CLIENT_CLOSED_STATUS, CLIENT_DISCONNECT)
        finally:
            watcher.cancel()
            if not work.done():  # the server itself is being cancelled (shutdown)
                work.cancel()

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The body, refused with 413 as soon as it passes the limit, whatever Content-Length says."""
        limit = self.spec.gateway.max_body_bytes
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _serve(self, state: RequestState, body: bytes, headers: Headers, send: Send) -> None:
        """Answer one request; every failure becomes an error object (never an exception out)."""
        deadline = self.spec.gateway.request_timeout_seconds
        try:
            async with asyncio.timeout(deadline):
                await self._answer(state, body, headers, send)
        except GatewayError as error:
            await self._fail(send, state, error)
        except TimeoutError:
            await self._fail(send, state, deadline_exceeded(deadline))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("request %s failed inside the gateway", state.id)
            await self._fail(send, state, internal_error())

    async def _answer(self, state: RequestState, body: bytes, headers: Headers, send: Send) -> None:
        s = self.settings
        chat = protocol.parse_chat_request(body, max_output_tokens=self.spec.gateway.max_output_tokens)
        state.stream = chat.stream
        if chat.model != s.served_model_name:
            raise protocol.unknown_model(chat.model, s.served_model_name)
        if not self.models_loaded:
            raise GatewayError(
                503, "the gateway is still loading its models", SERVER_ERROR, None, "not_ready"
            )
        passages = await self._route(state, chat.query, headers.get(PRIORITY_HEADER))
        prompt = protocol.build_prompt(chat.messages, passages)
        assert self.triton is not None
        state.handoff = time.perf_counter() - state.arrival
        remaining = self.spec.gateway.request_timeout_seconds - state.handoff
        tokens = self.triton.generate(
            state.id,
            prompt,
            max_tokens=chat.max_tokens,
            priority=state.level,
            timeout_us=s.queue_timeout_us(state.priority_class),
            deadline_s=max(remaining, 0.001),
        )
        async with aclosing(tokens):
            if chat.stream:
                await self._stream(state, chat, prompt, tokens, send)
            else:
                await self._complete(state, chat, prompt, tokens, send)

    async def _route(self, state: RequestState, query: str, requested: str | None) -> list[str]:
        """Embed once, then classify and search concurrently; sets the class on ``state``."""
        from phoenix_operator.ml.routing import UnknownPriorityClass, choose_class

        assert self.embedder is not None and self.classifier is not None
        embedder, classifier = self.embedder, self.classifier
        loop = asyncio.get_running_loop()
        began = time.perf_counter()
        vector = (await loop.run_in_executor(self.compute, embedder.embed, [query]))[0]
        state.stages["embed"] = embedded = time.perf_counter() - began

        def classify() -> tuple[Any, float]:
            start = time.perf_counter()
            return classifier.predict(query, embedding=vector), time.perf_counter() - start

        classified = loop.run_in_executor(self.compute, classify)
        searched = loop.run_in_executor(self.io, self._search, vector) if self.search is not None else None
        prediction, _ = await classified
        state.stages["classify"] = time.perf_counter() - began - embedded
        state.intent = prediction.intent
        state.confidence = round(float(prediction.confidence), 4)
        try:
            choice = choose_class(self.spec, prediction, requested)
        except UnknownPriorityClass as exc:
            raise invalid(str(exc), PRIORITY_HEADER, "invalid_priority_class") from None
        state.priority_class, state.level, state.route_reason = (
            choice.priority_class,
            choice.level,
            choice.reason,
        )
        passages: list[str] = []
        if searched is not None:
            passages, search_s = await searched
            state.stages["search"] = search_s
            self.metrics.retrieval.observe(embedded + search_s)
        state.passages = len(passages)
        for stage in ("classify", "embed", "search"):
            if stage in state.stages:
                self.metrics.stage.labels(stage, state.priority_class).observe(state.stages[stage])
        return passages

    def _search(self, vector: np.ndarray) -> tuple[list[str], float]:
        """Passages and the search time; a failed search answers without passages (logged, counted)."""
        assert self.search is not None
        began = time.perf_counter()
        try:
            passages = self.search.search(vector)
        except Exception as exc:  # pymilvus raises many types; retrieval must not fail the chat
            log.warning("search in %s failed, answering without passages: %s", self.search.uri, exc)
            self.metrics.retrieval_failures.inc()
            passages = []
        return passages, time.perf_counter() - began

    def _first_token(self, state: RequestState, sent_at: float) -> None:
        now = time.perf_counter()
        state.stages["first_token"] = now - sent_at
        state.ttft = now - state.arrival
        self.metrics.stage.labels("first_token", state.priority_class).observe(now - sent_at)
        self.metrics.ttft.labels(state.priority_class).observe(state.ttft)

    async def _stream(
        self,
        state: RequestState,
        chat: protocol.ChatRequest,
        prompt: str,
        tokens: AsyncIterator[str],
        send: Send,
    ) -> None:
        model, created = chat.model, int(time.time())
        sent_at = time.perf_counter()
        first = await anext(tokens, None)  # failures up to here still get their own status

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return protocol.sse(
                protocol.completion_chunk(state.id, created, model, delta, finish, chat.include_usage)
            )

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                    *state.headers(),
                ],
            }
        )
        state.started = True
        await _body(send, chunk({"role": "assistant", "content": ""}))
        if first is not None:
            await _body(send, chunk({"content": first}))
            self._first_token(state, sent_at)
            state.completion_tokens = 1
            async for text in tokens:
                await _body(send, chunk({"content": text}))
                state.completion_tokens += 1
        await _body(send, chunk({}, protocol.finish_reason(state.completion_tokens, chat.max_tokens)))
        if chat.include_usage:
            counts = protocol.usage(protocol.count_words(prompt), state.completion_tokens)
            await _body(send, protocol.sse(protocol.usage_chunk(state.id, created, model, counts)))
        await _body(send, protocol.SSE_DONE, more=False)
        self._finish(state, 200)

    async def _complete(
        self,
        state: RequestState,
        chat: protocol.ChatRequest,
        prompt: str,
        tokens: AsyncIterator[str],
        send: Send,
    ) -> None:
        sent_at = time.perf_counter()
        parts: list[str] = []
        async for text in tokens:
            if not parts:
                self._first_token(state, sent_at)
            parts.append(text)
        state.completion_tokens = len(parts)
        counts = protocol.usage(protocol.count_words(prompt), len(parts))
        answer = protocol.completion(
            state.id,
            int(time.time()),
            chat.model,
            "".join(parts),
            protocol.finish_reason(len(parts), chat.max_tokens),
            counts,
        )
        await _send_json(send, 200, answer, state.headers())
        self._finish(state, 200)

    # -- errors and accounting ---------------------------------------------------------------
    async def _fail(self, send: Send, state: RequestState, error: GatewayError) -> None:
        if not state.started:
            await self._send_error(send, state, error)
            return
        # Headers are out (200): tell the client in-band, as OpenAI's API does, and end the stream.
        await _body(send, protocol.sse(error.body()))
        await _body(send, protocol.SSE_DONE, more=False)
        self._finish(state, error.status, error.type, error)

    async def _send_error(self, send: Send, state: RequestState, error: GatewayError) -> None:
        await _send_json(send, error.status, error.body(), state.headers())
        self._finish(state, error.status, error.type, error)

    def _finish(
        self,
        state: RequestState,
        status: int,
        error_type: str | None = None,
        error: GatewayError | None = None,
    ) -> None:
        """Count the request once and write its access-log line."""
        cls = state.priority_class
        self.metrics.requests.labels(cls, str(status)).inc()
        if error_type is not None:
            self.metrics.errors.labels(cls, str(status), error_type).inc()
        if error_type == UPSTREAM_TIMEOUT:
            self.metrics.upstream_timeouts.labels(cls).inc()
        record: dict[str, Any] = {
            "request_id": state.id,
            "status": status,
            "class": cls,
            "intent": state.intent or None,
            "confidence": state.confidence,
            "route": state.route_reason or None,
            "stream": state.stream,
            "passages": state.passages,
            "stages_ms": {k: round(v * 1000, 2) for k, v in state.stages.items()},
            "ttft_ms": round(state.ttft * 1000, 2) if state.ttft is not None else None,
            "completion_tokens": state.completion_tokens,
            "total_ms": round((time.perf_counter() - state.arrival) * 1000, 2),
        }
        if error_type is not None:
            record["error"] = error_type
            if error is not None and error.code:
                record["error_code"] = error.code
        access_log.info(json.dumps(record, separators=(",", ":")))


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"the request body exceeds {limit} bytes", INVALID_REQUEST, None, "request_too_large"
    )


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message: AsgiMessage = await receive()
        if message["type"] == "http.disconnect":
            return


async def _body(send: Send, data: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _send_json(send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(payload, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data, "more_body": False})


class _ChatRoute:
    """Starlette treats a non-function endpoint as a raw ASGI app, which the chat route needs."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        error = GatewayError(404, f"no route {request.url.path}", INVALID_REQUEST, None, "not_found")
    elif status == 405:
        error = GatewayError(
            405, f"{request.method} is not allowed here", INVALID_REQUEST, None, "method_not_allowed"
        )
    else:
        error = GatewayError(status, str(getattr(exc, "detail", "")) or "error", INVALID_REQUEST)
    return JSONResponse(error.body(), status_code=error.status)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    error = internal_error()
    return JSONResponse(error.body(), status_code=error.status)


def create_app(gateway: Gateway) -> Starlette:
    """The Starlette app around ``gateway``; its lifespan starts and stops the gateway's clients."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    routes = [
        Route("/v1/chat/completions", _ChatRoute(gateway.chat), methods=["POST"]),
        Route("/v1/models", gateway.models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", gateway.model, methods=["GET"]),
        Route("/healthz", gateway.healthz, methods=["GET"]),
        Route("/readyz", gateway.readyz, methods=["GET"]),
        Route("/metrics", gateway.metrics_endpoint, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
