"""Operator settings from the environment (the chart sets them; tests and the demo override)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from phoenix_operator.render.objects import CACHE_DIR_ENV, NetworkAccess


@dataclass(frozen=True)
class OperatorSettings:
    #: Period of the drift/status check; it only reads when nothing changed.
    resync_seconds: float = 30.0
    #: "host:port" → "host:port" for in-cluster addresses the operator cannot reach from where it
    #: runs (an operator outside the cluster, the local test cluster whose pods are simulated).
    endpoint_overrides: dict[str, str] = field(default_factory=dict)
    milvus_timeout_seconds: float = 10.0
    #: How many past control-loop decisions status keeps.
    max_decisions: int = 10
    #: How long discovery of optional APIs (Milvus Operator, Prometheus Operator) is cached.
    capabilities_ttl_seconds: float = 60.0
    #: Kopf's executor: threads for the synchronous handlers (reconcile on create/update/resume
    #: and the resync timer), each held only for one pass.
    reconcile_workers: int = 8
    #: Threads that run control-loop steps (Prometheus queries, Triton reloads, Kubernetes
    #: patches). The loops themselves are asyncio daemons that hold no thread while they wait,
    #: so this bounds concurrent steps, not deployments.
    control_workers: int = 4
    #: Seconds a peering record stays valid without a refresh: how long a standby replica waits
    #: before it takes over from an active one that died (Kopf's default is 60).
    peering_lifetime_seconds: int = 15
    #: Who may reach Triton and Milvus through each deployment's NetworkPolicies (and whether
    #: they are rendered at all).
    network: NetworkAccess = field(default_factory=NetworkAccess)

    @classmethod
    def from_env(cls) -> OperatorSettings:
        overrides = os.environ.get("PHOENIX_ENDPOINT_OVERRIDES", "").strip()
        return cls(
            resync_seconds=float(os.environ.get("PHOENIX_RESYNC_SECONDS", cls.resync_seconds)),
            endpoint_overrides=json.loads(overrides) if overrides else {},
            milvus_timeout_seconds=float(
                os.environ.get("PHOENIX_MILVUS_TIMEOUT_SECONDS", cls.milvus_timeout_seconds)
            ),
            max_decisions=int(os.environ.get("PHOENIX_MAX_DECISIONS", cls.max_decisions)),
            capabilities_ttl_seconds=float(
                os.environ.get("PHOENIX_CAPABILITIES_TTL_SECONDS", cls.capabilities_ttl_seconds)
            ),
            reconcile_workers=_positive_int("PHOENIX_RECONCILE_WORKERS", cls.reconcile_workers),
            control_workers=_positive_int("PHOENIX_CONTROL_WORKERS", cls.control_workers),
            peering_lifetime_seconds=_positive_int(
                "PHOENIX_PEERING_LIFETIME_SECONDS", cls.peering_lifetime_seconds
            ),
            network=_network_access(),
        )

    def resolve(self, uri: str) -> str:
        """Rewrite ``uri``'s host:port through ``endpoint_overrides`` (scheme and path kept)."""
        parts = urlsplit(uri if "://" in uri else f"http://{uri}")
        target = self.endpoint_overrides.get(parts.netloc)
        if target is None:
            # Glob keys ("*.svc:19530") cover every namespace of a test or demo cluster.
            target = next((t for k, t in self.endpoint_overrides.items() if fnmatch(parts.netloc, k)), None)
        if target is None:
            return uri
        return urlunsplit(parts._replace(netloc=target)) if "://" in uri else target


def cache_root() -> Path:
    """Where the product keeps what it builds once per machine (classifier, Triton's server tree).

    Read when called, so a process (or a test) that sets the variable later is obeyed.
    """
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "phoenix-operator")


def _positive_int(name: str, default: int) -> int:
    """An integer ≥ 1 from the environment; anything else is a start-up error naming the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def _network_access() -> NetworkAccess:
    """NetworkPolicy peers from ``PHOENIX_*_SELECTOR`` (``key=value,...``); unset keeps the default."""
    default = NetworkAccess()
    enabled = os.environ.get("PHOENIX_NETWORK_POLICIES", "true").strip().lower()
    if enabled not in ("true", "false"):
        raise ValueError(f"PHOENIX_NETWORK_POLICIES must be true or false, got {enabled!r}")
    return NetworkAccess(
        enabled=enabled == "true",
        operator_namespaces=_selector("PHOENIX_OPERATOR_NAMESPACE_SELECTOR", default.operator_namespaces),
        operator_pods=_selector("PHOENIX_OPERATOR_POD_SELECTOR", default.operator_pods),
        prometheus_namespaces=_selector(
            "PHOENIX_PROMETHEUS_NAMESPACE_SELECTOR", default.prometheus_namespaces
        ),
    )


def _selector(name: str, default: dict[str, str]) -> dict[str, str]:
    """``matchLabels`` from ``key=value,key=value``; set but empty selects everything."""
    text = os.environ.get(name)
    if text is None:
        return default
    labels: dict[str, str] = {}
    for term in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = term.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{name} must be key=value[,key=value...], got {text!r}")
        labels[key.strip()] = value.strip()
    return labels
