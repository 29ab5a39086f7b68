"""Actuators: make a decision real — replicas through Kubernetes, batching through Triton.

Batching is reloaded live on every ready endpoint at once, all or nothing: a failure rolls the
others back, so a fleet is never half-applied or reported as either state. Details:
docs/operator.md, "The control loop" (Act), and docs/deploy.md, "Secrets".
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from kubernetes.client.exceptions import ApiException

from phoenix_operator.clients.kube import Kube
from phoenix_operator.intents import LoadModelConfig
from phoenix_operator.render.objects import HTTP_PORT, Target
from phoenix_operator.render.secrets import (
    SECRET_VALUE_KEY,
    TRITON_CONTROL_HEADER,
    triton_control_secret_name,
)
from phoenix_operator.render.tritonconfig import BatchingConfig, batching_of, normalize_config

T = TypeVar("T")
log = logging.getLogger(__name__)

#: What happened to an endpoint's previous config after a failed rollout.
#: ``rolled-back``: reloaded with it and verified; ``unchanged``: the reload never took, it still
#: serves it (verified); ``failed``: could not be restored or verified (state unknown).
RollbackState = Literal["rolled-back", "unchanged", "failed"]

BATCHING_APPLIED = "BatchingApplied"


@dataclass(frozen=True)
class EndpointResult:
    endpoint: str
    ok: bool
    error: str | None = None
    #: What the endpoint served before the reload; None when it was never read (never touched).
    previous: BatchingConfig | None = None
    rollback: RollbackState | None = None
    rollback_error: str | None = None


@dataclass(frozen=True)
class BatchingApplyResult:
    results: tuple[EndpointResult, ...] = ()
    wanted: BatchingConfig | None = None
    apply_s: float = 0.0
    rollback_s: float = 0.0

    @property
    def applied(self) -> bool:
        """True when at least one endpoint exists and every endpoint runs the new config."""
        return bool(self.results) and all(r.ok for r in self.results)

    @property
    def failed(self) -> list[EndpointResult]:
        return [r for r in self.results if not r.ok]

    @property
    def rolled_back(self) -> list[str]:
        """Endpoints that served the new config, or may have, and were verified back on the old."""
        return [r.endpoint for r in self.results if r.rollback == "rolled-back"]

    @property
    def rollback_failed(self) -> list[EndpointResult]:
        return [r for r in self.results if r.rollback == "failed"]

    @property
    def rollback_complete(self) -> bool:
        """After a failed rollout: no endpoint is left on the new config or in an unknown state."""
        return not self.rollback_failed

    @property
    def elapsed_s(self) -> float:
        return self.apply_s + self.rollback_s

    @property
    def reason(self) -> str:
        """The ``BatchingApplied`` condition's reason for this outcome."""
        if not self.results:
            return "NoReadyEndpoint"
        if self.applied:
            return "Applied"
        if not self.rollback_complete:
            return "RollbackIncomplete"
        return "RolledBack" if self.rolled_back else "NotApplied"

    def describe(self, limit: int = 900) -> str:
        if not self.results:
            return "no ready Triton endpoint"
        ok = sum(r.ok for r in self.results)
        parts = [f"{ok}/{len(self.results)} endpoints reloaded in {self.apply_s:.1f} s"]
        if self.failed:
            parts.append("failed: " + "; ".join(f"{r.endpoint}: {r.error}" for r in self.failed))
        if self.rolled_back:
            parts.append(f"rolled back (verified) in {self.rollback_s:.1f} s: " + ", ".join(self.rolled_back))
        if self.rollback_failed:
            parts.append(
                "rollback NOT verified: "
                + "; ".join(f"{r.endpoint}: {r.rollback_error}" for r in self.rollback_failed)
            )
        text = " | ".join(parts)
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def condition(self) -> dict[str, str]:
        """``BatchingApplied``: True when the whole fleet serves the new batching, else why not."""
        wanted = self.wanted.describe() if self.wanted else "the new batching"
        status = "True" if self.applied else "False"
        message = f"{wanted}: {self.describe()}"
        return {"type": BATCHING_APPLIED, "status": status, "reason": self.reason, "message": message}


def ready_endpoints(kube: Kube, service: str, namespace: str, resolve: Callable[[str], str]) -> list[str]:
    """``host:port`` of every ready address behind ``service`` (its EndpointSlices), resolved."""
    slices = kube.list(
        "discovery.k8s.io/v1", "EndpointSlice", namespace, f"kubernetes.io/service-name={service}"
    )
    out: list[str] = []
    for endpoint_slice in slices:
        port = next(
            (p.get("port") for p in endpoint_slice.get("ports") or [] if p.get("name") == "http"), HTTP_PORT
        )
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                host = f"[{address}]" if ":" in address else address
                out.append(resolve(f"{host}:{port}"))
    return sorted(set(out))


def triton_control_key(kube: Kube, target: Target) -> str | None:
    """The key for Triton's restricted model control, from the generated Secret, if it exists.

    Read only when a reload is due. Without the Secret (Triton's model control not restricted)
    no header is sent; a Triton that does require one then refuses, and the result says so.
    """
    secret = triton_control_secret_name(target.name)
    try:
        data = kube.secret_data(secret, target.namespace)
    except ApiException as exc:
        log.warning(
            "cannot read Secret %s/%s (%s): reloading without the model-control key",
            target.namespace,
            secret,
            exc.reason,
        )
        return None
    return (data or {}).get(SECRET_VALUE_KEY) or None


@dataclass
class _Progress:
    """How far one endpoint got, kept outside its task so a deadline can still judge it."""

    stage: str = "reading its config"
    previous_json: str | None = None
    previous: BatchingConfig | None = None
    load_sent: bool = False


@dataclass(frozen=True)
class TritonModelControl:
    """Reload one model's config on a set of Triton HTTP endpoints, concurrently, all or nothing.

    ``timeout_s`` bounds the whole rollout (every endpoint together), ``rollback_timeout_s`` the
    rollback after a failure, so a step costs at most their sum whatever the number of pods.
    ``control_key`` is sent in ``TRITON_CONTROL_HEADER`` when Triton's model control is restricted.
    """

    timeout_s: float = 30.0
    rollback_timeout_s: float | None = None
    control_key: str | None = field(default=None, repr=False)
    attempts: int = 2

    def with_key(self, control_key: str | None) -> TritonModelControl:
        return replace(self, control_key=control_key)

    @property
    def headers(self) -> dict[str, str] | None:
        return {TRITON_CONTROL_HEADER: self.control_key} if self.control_key else None

    # -- public, blocking (the control loop's step runs in a worker thread) -------------------
    def apply(self, endpoints: Sequence[str], model: str, config_json: str) -> BatchingApplyResult:
        """Load ``config_json`` (the *full* model config) on every endpoint; roll back on failure."""
        return _run(self._apply(list(endpoints), model, config_json))

    def load(self, intent: LoadModelConfig) -> BatchingApplyResult:
        """Perform ``intent`` with its own key (the writer's entry point)."""
        keyed = self.with_key(intent.control_key)
        return keyed.apply(intent.endpoints, intent.model, intent.config_json)

    def current_config(self, endpoint: str, model: str) -> dict[str, Any]:
        return _run(_bounded(self._read_config(endpoint, model), self.timeout_s))

    def served_batching(self, endpoints: Sequence[str], model: str) -> dict[str, BatchingConfig | str]:
        """What each endpoint runs now (or the error reading it), for drift checks and tests."""

        async def one(endpoint: str) -> BatchingConfig | str:
            try:
                return batching_of(await _bounded(self._read_config(endpoint, model), self.timeout_s))
            except Exception as exc:
                return _short(exc)

        async def every() -> dict[str, BatchingConfig | str]:
            found = await asyncio.gather(*(one(e) for e in endpoints))
            return dict(zip(endpoints, found, strict=True))

        return _run(every())

    # -- rollout ------------------------------------------------------------------------------
    async def _apply(self, endpoints: list[str], model: str, config_json: str) -> BatchingApplyResult:
        wanted = batching_of(json.loads(config_json))
        if not endpoints:
            return BatchingApplyResult((), wanted)
        progress = {e: _Progress() for e in endpoints}
        began = time.monotonic()
        outcomes = await _all_within(
            {e: self._load_one(e, model, config_json, wanted, progress[e]) for e in endpoints},
            self.timeout_s,
        )
        apply_s = time.monotonic() - began
        results: dict[str, EndpointResult] = {}
        for e in endpoints:
            outcome = outcomes[e]
            if outcome is None:
                outcome = f"no answer within {self.timeout_s:g} s ({progress[e].stage})"
            results[e] = EndpointResult(e, outcome == "", outcome or None, previous=progress[e].previous)
        if all(r.ok for r in results.values()):
            return BatchingApplyResult(tuple(results[e] for e in endpoints), wanted, apply_s)

        touched = [e for e in endpoints if progress[e].load_sent]
        began = time.monotonic()
        rollback_timeout_s = (
            self.rollback_timeout_s if self.rollback_timeout_s is not None else self.timeout_s
        )
        restored = await _all_within(
            {e: self._restore_one(e, model, progress[e], results[e].ok) for e in touched}, rollback_timeout_s
        )
        rollback_s = time.monotonic() - began
        for e in touched:
            state, error = restored[e] or (
                "failed",
                f"no answer within {rollback_timeout_s:g} s: state unknown",
            )
            results[e] = replace(results[e], rollback=state, rollback_error=error)
        return BatchingApplyResult(tuple(results[e] for e in endpoints), wanted, apply_s, rollback_s)

    async def _load_one(
        self, endpoint: str, model: str, config_json: str, wanted: BatchingConfig, progress: _Progress
    ) -> str:
        """Why ``endpoint`` does not serve ``wanted`` after the reload; empty when it does."""
        import tritonclient.http.aio as aioclient
        from tritonclient.utils import InferenceServerException

        client = aioclient.InferenceServerClient(endpoint, conn_timeout=self.timeout_s)
        try:
            previous = normalize_config(await client.get_model_config(model, headers=self.headers))
            progress.previous_json = json.dumps(previous, sort_keys=True)
            progress.previous = batching_of(previous)
            error = "not attempted"
            for attempt in range(max(1, self.attempts)):
                progress.stage = "loading the new config"
                progress.load_sent = True
                try:
                    await client.load_model(model, headers=self.headers, config=config_json)
                    progress.stage = "verifying the new config"
                    served = batching_of(await client.get_model_config(model, headers=self.headers))
                except InferenceServerException as exc:
                    error = _short(exc)
                    if _refused(exc):  # Triton answered no (bad key, bad config): asking again won't help
                        break
                else:
                    if served == wanted:
                        return ""
                    error = f"serves {served.describe()} after the reload"
                if attempt + 1 < self.attempts:
                    await asyncio.sleep(0.2)
            return error
        except Exception as exc:  # transport errors of aiohttp and tritonclient alike
            return f"{progress.stage}: {_short(exc)}"
        finally:
            await client.close()

    async def _restore_one(
        self, endpoint: str, model: str, progress: _Progress, reloaded: bool
    ) -> tuple[RollbackState, str | None]:
        """Put ``endpoint`` back on the config it served before, and verify it."""
        import tritonclient.http.aio as aioclient

        assert progress.previous_json is not None and progress.previous is not None
        client = aioclient.InferenceServerClient(endpoint, conn_timeout=self.timeout_s)
        try:
            if not reloaded:
                served = batching_of(await client.get_model_config(model, headers=self.headers))
                if served == progress.previous:
                    return "unchanged", None
            await client.load_model(model, headers=self.headers, config=progress.previous_json)
            served = batching_of(await client.get_model_config(model, headers=self.headers))
            if served != progress.previous:
                return "failed", f"serves {served.describe()} after the rollback"
            return "rolled-back", None
        except Exception as exc:
            return "failed", _short(exc)
        finally:
            await client.close()

    async def _read_config(self, endpoint: str, model: str) -> dict[str, Any]:
        import tritonclient.http.aio as aioclient

        client = aioclient.InferenceServerClient(endpoint, conn_timeout=self.timeout_s)
        try:
            config: dict[str, Any] = normalize_config(
                await client.get_model_config(model, headers=self.headers)
            )
            return config
        finally:
            await client.close()


async def _all_within(tasks: dict[str, Coroutine[Any, Any, T]], timeout_s: float) -> dict[str, T | None]:
    """Run every coroutine at once; those still running at the deadline are cancelled (None)."""
    if not tasks:
        return {}
    running = {key: asyncio.ensure_future(coro) for key, coro in tasks.items()}
    _, pending = await asyncio.wait(running.values(), timeout=timeout_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    return {key: None if task in pending else task.result() for key, task in running.items()}


async def _bounded(coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
    async with asyncio.timeout(timeout_s):
        return await coro


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from blocking code, also when called on an event loop's thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="phoenix-model-control", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _refused(exc: Any) -> bool:
    """Whether Triton itself answered with a client error (4xx), as opposed to failing to answer."""
    status = exc.status() if callable(getattr(exc, "status", None)) else None
    return bool(status) and str(status).isdigit() and 400 <= int(str(status)) < 500


def _short(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
