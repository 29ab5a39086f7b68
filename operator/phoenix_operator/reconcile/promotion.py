"""Make a promoted LLM version live: pin Triton's ``version_policy`` on every ready endpoint.

The decision is already in ``status.quality.model`` (`reconcile.quality`); this edge only has the
writer load the pinned config (which rolls every endpoint back when one fails), checks
that each endpoint reports the version ready, and hands the result back to `record_rollout`.
The ConfigMap new pods start from is rendered from the same status by the reconciler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from phoenix_operator.api.models import PhoenixDeploymentSpec, QualityStatus
from phoenix_operator.clients.kube import Kube
from phoenix_operator.clients.triton import ready_endpoints
from phoenix_operator.intents import LoadModelConfig
from phoenix_operator.render.objects import Target, triton_name
from phoenix_operator.render.tritonconfig import BatchingConfig, model_config_dict, to_load_json
from phoenix_operator.status import quality as qual


class ApplyResult(Protocol):
    @property
    def applied(self) -> bool: ...

    def describe(self) -> str: ...


#: Performs a load and says how it went: the writer's ``load_model_config``.
LoadConfig = Callable[[LoadModelConfig], ApplyResult]


def version_ready(endpoint: str, model: str, version: int, timeout_s: float = 10.0) -> bool:
    """Whether ``endpoint`` reports ``model`` version ``version`` ready (Triton's readiness API)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(
        endpoint, connection_timeout=timeout_s, network_timeout=timeout_s
    )
    try:
        return bool(client.is_model_ready(model, str(version)))
    except Exception:  # tritonclient raises its own and transport errors: not ready either way
        return False
    finally:
        client.close()


def load_version(
    load: LoadConfig,
    endpoints: Sequence[str],
    spec: PhoenixDeploymentSpec,
    batching: BatchingConfig,
    version: int,
    control_key: str | None = None,
    ready: Callable[[str, str, int], bool] = version_ready,
) -> tuple[bool, str]:
    """Load the config pinned to ``version`` on ``endpoints``; (loaded everywhere, what happened)."""
    if not endpoints:
        return True, f"no ready Triton endpoint; new pods start on version {version} from the ConfigMap"
    config_json = to_load_json(model_config_dict(spec, batching, version))
    result = load(LoadModelConfig(tuple(endpoints), spec.model.name, config_json, control_key))
    if not result.applied:
        return False, result.describe()
    missing = [e for e in endpoints if not ready(e, spec.model.name, version)]
    if missing:
        return False, f"version {version} not ready on {', '.join(missing[:3])} after the reload"
    return True, result.describe()


def roll_out(
    kube: Kube,
    target: Target,
    spec: PhoenixDeploymentSpec,
    batching: BatchingConfig,
    quality: QualityStatus | None,
    resolve: Callable[[str], str],
    load: LoadConfig,
    control_key: str | None,
    now: str,
) -> tuple[QualityStatus | None, list[tuple[str, str, str]]]:
    """Load the version status pins but Triton does not serve yet; status and Events to write back."""
    version = qual.pending_version(quality)
    if quality is None or version is None:
        return quality, []
    endpoints = ready_endpoints(kube, triton_name(target.name), target.namespace, resolve)
    loaded, detail = load_version(load, endpoints, spec, batching, version, control_key)
    updated, event = qual.record_rollout(quality, version, loaded, detail, now)
    return updated, [event]
