"""Actuators: make a decision real — replicas through Kubernetes, batching through Triton.

Batching is applied live with Triton's model-control API (``load_model(name, config=...)``) on
every ready endpoint of the deployment's Service, found through its EndpointSlices. Triton keeps
serving the old version until the new one is loaded, so requests do not fail during a reload.
A decision counts as applied only when every endpoint reports the new config back; otherwise
it is reported (and retried next interval) — never half-applied silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from phoenix_operator.reconcile.kube import Kube
from phoenix_operator.render.objects import HTTP_PORT
from phoenix_operator.render.tritonconfig import BatchingConfig, batching_of, normalize_config


@dataclass(frozen=True)
class EndpointResult:
    endpoint: str
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class BatchingApplyResult:
    results: tuple[EndpointResult, ...] = ()

    @property
    def applied(self) -> bool:
        """True when at least one endpoint exists and every endpoint runs the new config."""
        return bool(self.results) and all(r.ok for r in self.results)

    @property
    def failed(self) -> list[EndpointResult]:
        return [r for r in self.results if not r.ok]

    def describe(self) -> str:
        if not self.results:
            return "no ready Triton endpoint"
        ok = sum(r.ok for r in self.results)
        text = f"{ok}/{len(self.results)} endpoints reloaded"
        if self.failed:
            text += "; " + "; ".join(f"{r.endpoint}: {r.error}" for r in self.failed[:3])
        return text


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


class TritonModelControl:
    """Reload one model's config on a set of Triton HTTP endpoints."""

    def __init__(self, timeout_s: float = 30.0, attempts: int = 2) -> None:
        self.timeout_s = timeout_s
        self.attempts = attempts

    def _client(self, endpoint: str) -> Any:
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(
            endpoint, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
        )

    def current_config(self, endpoint: str, model: str) -> dict[str, Any]:
        client = self._client(endpoint)
        try:
            config: dict[str, Any] = normalize_config(client.get_model_config(model))
            return config
        finally:
            client.close()

    def apply(self, endpoints: Sequence[str], model: str, config_json: str) -> BatchingApplyResult:
        """Load ``config_json`` (the *full* model config) on every endpoint, then verify it."""
        wanted = batching_of(json.loads(config_json))
        results = []
        for endpoint in endpoints:
            error = None
            for _ in range(self.attempts):
                try:
                    client = self._client(endpoint)
                    try:
                        client.load_model(model, config=config_json)
                        served = batching_of(normalize_config(client.get_model_config(model)))
                    finally:
                        client.close()
                except Exception as exc:  # tritonclient raises its own and transport errors
                    error = _short(exc)
                    continue
                if served == wanted:
                    error = None
                    break
                error = f"serves {served.describe()} after reload"
            results.append(EndpointResult(endpoint, error is None, error))
        return BatchingApplyResult(tuple(results))

    def served_batching(self, endpoints: Sequence[str], model: str) -> dict[str, BatchingConfig | str]:
        """What each endpoint runs now (or the error reading it), for drift checks and tests."""
        out: dict[str, BatchingConfig | str] = {}
        for endpoint in endpoints:
            try:
                out[endpoint] = batching_of(self.current_config(endpoint, model))
            except Exception as exc:
                out[endpoint] = _short(exc)
        return out


def _short(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
