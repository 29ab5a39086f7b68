"""Spec → Triton model configuration (``config.pbtxt`` and the JSON override for ``load_model``).

The config is built once as a ``ModelConfig`` protobuf (tritonclient ships Triton's
``model_config_pb2``), so the text form and the JSON form cannot drift from each other, and a
field name we get wrong fails here, in a unit test, instead of in a Triton log.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format, text_format

from phoenix_operator.api.models import AutoscalingMode, PhoenixDeploymentSpec, PrioritySpec, QueuePolicy

MODEL_CONFIG_MODULE = "tritonclient.grpc.model_config_pb2"


def _model_config_messages() -> ModuleType:
    """Triton's ``model_config_pb2`` alone, without running ``tritonclient.grpc``'s package.

    That package imports gRPC, its service stubs, numpy and ml_dtypes (about 29 MB of the
    operator's resident memory) for a schema that needs only protobuf. Registered under its own
    name, so a later ``import tritonclient.grpc`` in the same process reuses it.
    """
    if MODEL_CONFIG_MODULE in sys.modules:
        return sys.modules[MODEL_CONFIG_MODULE]
    package = importlib.util.find_spec("tritonclient")
    if package is None or not package.submodule_search_locations:
        raise ImportError("tritonclient is not installed")
    path = Path(next(iter(package.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location(MODEL_CONFIG_MODULE, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODEL_CONFIG_MODULE] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2
else:
    model_config_pb2 = _model_config_messages()


@dataclass(frozen=True)
class BatchingConfig:
    """The part of the model config the control loop may change live."""

    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    instance_count: int

    @classmethod
    def from_spec(cls, spec: PhoenixDeploymentSpec) -> BatchingConfig:
        return cls(
            preferred_batch_sizes=tuple(sorted(spec.batching.preferred_batch_sizes)),
            max_queue_delay_us=spec.batching.max_queue_delay_microseconds,
            instance_count=spec.model.instance_count,
        )

    def with_delay(self, delay_us: int) -> BatchingConfig:
        return replace(self, max_queue_delay_us=delay_us)

    def describe(self) -> str:
        sizes = ",".join(map(str, self.preferred_batch_sizes)) or "-"
        return f"preferred=[{sizes}] delay={self.max_queue_delay_us}us instances={self.instance_count}"


def _queue_policy(policy: QueuePolicy) -> dict[str, Any]:
    out: dict[str, Any] = {
        "timeout_action": policy.timeout_action,
        "default_timeout_microseconds": policy.timeout_microseconds,
        "allow_timeout_override": policy.allow_timeout_override,
        "max_queue_size": policy.max_queue_size,
    }
    return out


def _priority_block(priority: PrioritySpec) -> dict[str, Any]:
    by_name = {c.name: c for c in priority.classes}
    default = by_name[priority.default_class]
    return {
        "priority_levels": max(c.level for c in priority.classes),
        "default_priority_level": default.level,
        "default_queue_policy": _queue_policy(default.queue_policy),
        "priority_queue_policy": {str(c.level): _queue_policy(c.queue_policy) for c in priority.classes},
    }


def version_policy(version: int) -> dict[str, Any]:
    """Serve exactly ``version``: a candidate directory the gate rejected is never loaded.

    Triton's default policy serves the highest-numbered directory, so without a pin a pod that
    restarts after a fine-tune wrote ``<model>/<N>/`` would serve the candidate unjudged.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"a model version is a positive integer, got {version!r}")
    return {"specific": {"versions": [version]}}


def served_versions_of(config: dict[str, Any]) -> tuple[int, ...] | None:
    """The versions a (served) config pins; None when it keeps Triton's default policy."""
    specific = (config.get("version_policy") or {}).get("specific")
    if specific is None:
        return None
    return tuple(sorted(int(v) for v in specific.get("versions") or []))


def model_config_dict(
    spec: PhoenixDeploymentSpec, batching: BatchingConfig | None = None, version: int | None = None
) -> dict[str, Any]:
    """The model config in Triton's JSON shape (proto field names).

    ``version`` is the fine-tuned version the gate promoted (``status.quality.model.servingVersion``);
    None keeps Triton's default version policy.
    """
    batching = batching or BatchingConfig.from_spec(spec)
    model = spec.model
    config: dict[str, Any] = {
        "name": model.name,
        "backend": model.backend,
        "max_batch_size": model.max_batch_size,
        "instance_group": [
            {
                "count": batching.instance_count,
                "kind": "KIND_GPU" if spec.triton.gpus_per_replica > 0 else "KIND_CPU",
            }
        ],
        "model_transaction_policy": {"decoupled": model.decoupled},
    }
    if version is not None:
        config["version_policy"] = version_policy(version)
    if spec.batching.enabled:
        block: dict[str, Any] = {
            "preferred_batch_size": list(batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": batching.max_queue_delay_us,
            "preserve_ordering": spec.batching.preserve_ordering,
        }
        if spec.priority is not None:
            block.update(_priority_block(spec.priority))
        config["dynamic_batching"] = block
    if spec.triton.ttft_buckets_ms:
        config["model_metrics"] = {
            "metric_control": [
                {
                    "metric_identifier": {"family": "nv_inference_first_response_histogram_ms"},
                    "histogram_options": {"buckets": sorted(spec.triton.ttft_buckets_ms)},
                }
            ]
        }
    if model.parameters:
        config["parameters"] = {k: {"string_value": v} for k, v in sorted(model.parameters.items())}
    for key, tensors in (("input", model.inputs), ("output", model.outputs)):
        if tensors:
            config[key] = [
                {"name": t.name, "data_type": t.data_type, "dims": list(t.dims)}
                | ({"optional": True} if t.optional and key == "input" else {})
                for t in tensors
            ]
    return config


def to_proto(config: dict[str, Any]) -> model_config_pb2.ModelConfig:
    """Parse into Triton's proto; raises ``json_format.ParseError`` on an unknown field."""
    return json_format.ParseDict(config, model_config_pb2.ModelConfig())


def to_pbtxt(config: dict[str, Any]) -> str:
    return text_format.MessageToString(to_proto(config))


def to_load_json(config: dict[str, Any]) -> str:
    """The ``config`` parameter for ``load_model``: the *full* config (Triton replaces, not merges)."""
    message = json_format.MessageToDict(to_proto(config), preserving_proto_field_name=True)
    return json.dumps(normalize_config(message), sort_keys=True)


_INT64_FIELDS = {
    "max_queue_delay_microseconds",
    "priority_levels",
    "default_priority_level",
    "default_timeout_microseconds",
}


def normalize_config(config: Any) -> Any:
    """Turn protobuf-JSON 64-bit integers (strings) back into ints, recursively.

    gRPC ``get_model_config(as_json=True)`` and ``MessageToDict`` render int64 as strings, HTTP
    returns ints; comparing configs from both must not see a difference that is not there.
    """
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            if key in _INT64_FIELDS and isinstance(value, str) and value.lstrip("-").isdigit():
                out[key] = int(value)
            else:
                out[key] = normalize_config(value)
        return out
    if isinstance(config, list):
        return [normalize_config(v) for v in config]
    return config


def batching_of(config: dict[str, Any]) -> BatchingConfig:
    """Read the live-tunable part back out of a (served) model config."""
    config = normalize_config(config)
    block = config.get("dynamic_batching") or {}
    groups = config.get("instance_group") or [{}]
    return BatchingConfig(
        preferred_batch_sizes=tuple(sorted(int(s) for s in block.get("preferred_batch_size", []))),
        max_queue_delay_us=int(block.get("max_queue_delay_microseconds", 0)),
        instance_count=int(groups[0].get("count", 1)),
    )


def batching_in_force(spec: PhoenixDeploymentSpec, status: Mapping[str, Any]) -> BatchingConfig:
    """The spec's batching, or the tuned one the control loop persisted if it is still allowed.

    A tuned config survives operator restarts (it lives in status and the ConfigMap) but is
    dropped as soon as the user's spec no longer allows it (mode changed, bounds narrowed).
    """
    from_spec = BatchingConfig.from_spec(spec)
    tuned = status.get("batching") or {}
    auto = spec.autoscaling
    if tuned.get("source") != "tuned" or auto.mode != AutoscalingMode.AUTO or not auto.tune_batching:
        return from_spec
    bounds = spec.batching.bounds
    candidate = BatchingConfig(
        preferred_batch_sizes=tuple(sorted(int(s) for s in tuned.get("preferredBatchSizes", []))),
        max_queue_delay_us=int(tuned.get("maxQueueDelayMicroseconds", -1)),
        instance_count=int(tuned.get("instanceCount", 0)),
    )
    size_cap = min(spec.model.max_batch_size, bounds.max_preferred_batch_size or spec.model.max_batch_size)
    allowed = (
        all(1 <= s <= size_cap for s in candidate.preferred_batch_sizes)
        and bounds.min_queue_delay_microseconds
        <= candidate.max_queue_delay_us
        <= bounds.max_queue_delay_microseconds
        and bounds.min_instance_count <= candidate.instance_count <= bounds.max_instance_count
    )
    return candidate if allowed else from_spec
