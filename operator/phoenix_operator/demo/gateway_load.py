"""The demo's chat client: a share of the workload's arrivals as real streaming chat requests.

Each request is a BANKING77 test-split question, sent to the gateway's
``/v1/chat/completions`` (``stream: true``) at its arrival's wall time, on its own event loop in a
background thread. What came back — status, the gateway's class and stage timings, the time to the
first content token, the twin's record id — is an :class:`~phoenix_operator.demo.requestpath.Outcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from phoenix_operator.api.models import PRIORITY_HEADER
from phoenix_operator.demo.requestpath import Outcome, parse_server_timing, twin_id_of
from phoenix_operator.sim.request import Arrival

#: The gateway's intent header (the classifier's pick).
INTENT_HEADER = "x-phoenix-intent"


def read_questions(path: Path) -> list[str]:
    """The texts of a BANKING77 split, in file order."""
    with path.open(newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def gateway_indices(count: int, share: float) -> list[int]:
    """Which of ``count`` arrivals go through the gateway: evenly spread, ``round(count x share)``."""
    if share <= 0 or count == 0:
        return []
    return [i for i in range(count) if int((i + 1) * share) > int(i * share)]


class GatewayLoad:
    """Sends ``arrivals`` to the gateway at ``mono_of(arrival.time_s)``; thread-safe read-out."""

    def __init__(
        self,
        url: str,
        model: str,
        arrivals: Sequence[Arrival],
        texts: Sequence[str],
        mono_of: Callable[[float], float],
        *,
        max_tokens_cap: int,
        timeout_s: float,
        max_connections: int = 256,
    ) -> None:
        if not texts:
            raise ValueError("no questions to send")
        self.url = url
        self.model = model
        self.arrivals = list(arrivals)
        self.texts = list(texts)
        self.mono_of = mono_of
        self.max_tokens_cap = max_tokens_cap
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._grace_s = 0.0
        self._thread: threading.Thread | None = None

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def start(self) -> GatewayLoad:
        self._thread = threading.Thread(target=self._run, name="demo-chat-client", daemon=True)
        self._thread.start()
        return self

    def finish(self, grace_s: float) -> None:
        """Stop sending; wait up to ``grace_s`` for answers in flight, then cancel them."""
        if self._thread is None:
            return
        self._grace_s = grace_s
        stop = self._stop
        if stop is not None:
            self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout=grace_s + 30)
        self._thread = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = stop = asyncio.Event()
        limits = httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=64)
        timeout = httpx.Timeout(self.timeout_s, pool=None)
        tasks: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=timeout) as client:
            for i, arrival in enumerate(self.arrivals):
                delay = self.mono_of(arrival.time_s) - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
                task = asyncio.create_task(self._one(client, i, arrival))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await stop.wait()
            if tasks:
                await asyncio.wait(set(tasks), timeout=self._grace_s)
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.wait(set(tasks), timeout=5)

    async def _one(self, client: httpx.AsyncClient, index: int, arrival: Arrival) -> None:
        scheduled = self.mono_of(arrival.time_s)
        sent = time.monotonic()
        outcome = Outcome(index=index, arrival_s=arrival.time_s, send_lag_s=max(0.0, sent - scheduled))
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": self.texts[index % len(self.texts)]}],
            "stream": True,
            "max_tokens": max(1, min(arrival.output_tokens, self.max_tokens_cap)),
        }
        try:
            async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                outcome.status = resp.status_code
                outcome.priority_class = resp.headers.get(PRIORITY_HEADER)
                outcome.intent = resp.headers.get(INTENT_HEADER)
                outcome.stages = parse_server_timing(resp.headers.get("server-timing"))
                if resp.status_code != 200:
                    raw = await resp.aread()
                    try:
                        outcome.error = str(json.loads(raw)["error"].get("type", ""))
                    except (ValueError, KeyError, TypeError, AttributeError):
                        outcome.error = raw[:200].decode("utf-8", errors="replace")
                    return
                async for line in resp.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text and outcome.client_ttft_s is None:
                            outcome.client_ttft_s = time.monotonic() - sent
                            outcome.twin_id = twin_id_of(text)
        except httpx.HTTPError as exc:
            if outcome.status == 200:
                outcome.status = 0  # the stream broke: not served
            outcome.error = type(exc).__name__
        except asyncio.CancelledError:
            outcome.error = outcome.error or "cancelled at the end of the run"
            if outcome.client_ttft_s is None:
                outcome.status = 0
            raise
        finally:
            with self._lock:
                self.outcomes.append(outcome)
