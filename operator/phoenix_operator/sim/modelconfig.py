"""Triton model configuration (the JSON ``load_model`` sends) -> the simulator's :class:`BatcherConfig`.

The operator builds the config with ``render.tritonconfig`` (proto field names, protobuf-JSON
conventions: defaults left out, 64-bit integers possibly as strings); the twin and
``phoenix plan`` read it back the way Triton would, so a spec reaches every batcher one way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from phoenix_operator.render.tritonconfig import normalize_config
from phoenix_operator.sim.config import BatcherConfig, QueuePolicy


class ModelConfigError(ValueError):
    """The config cannot be served (Triton would refuse to load it)."""


def _int(block: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = block.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ModelConfigError(f"{key} must be an integer, got {value!r}") from exc


def _queue_policy(block: Mapping[str, Any] | None) -> QueuePolicy:
    block = block or {}
    action = str(block.get("timeout_action", "REJECT")).upper()
    if action not in ("REJECT", "DELAY"):
        raise ModelConfigError(f"timeout_action must be REJECT or DELAY, got {action!r}")
    return QueuePolicy(
        timeout_action="DELAY" if action == "DELAY" else "REJECT",
        default_timeout_us=_int(block, "default_timeout_microseconds"),
        allow_timeout_override=bool(block.get("allow_timeout_override", False)),
        max_queue_size=_int(block, "max_queue_size"),
    )


def _level(key: Any) -> int:
    try:
        return int(key)
    except (TypeError, ValueError) as exc:
        raise ModelConfigError(f"priority_queue_policy keys must be levels, got {key!r}") from exc


def batcher_from_model_config(config: Mapping[str, Any]) -> BatcherConfig:
    """The batching part of a Triton model config, as the twin's batcher runs it.

    A config without ``dynamic_batching`` is served request by request here as well (no delay,
    no preferred sizes); ``instance_group`` counts are summed like Triton's instances.
    """
    cfg = normalize_config(dict(config))
    max_batch = _int(cfg, "max_batch_size")
    if max_batch < 1:
        raise ModelConfigError("the twin needs max_batch_size >= 1 (batching enabled)")
    block = cfg.get("dynamic_batching") or {}
    groups = cfg.get("instance_group") or [{}]
    instances = sum(_int(g, "count", 1) for g in groups)
    levels = _int(block, "priority_levels")
    policies = {
        _level(level): _queue_policy(policy)
        for level, policy in (block.get("priority_queue_policy") or {}).items()
    }
    try:
        return BatcherConfig(
            max_batch_size=max_batch,
            preferred_batch_sizes=tuple(sorted(int(s) for s in block.get("preferred_batch_size") or ())),
            max_queue_delay_us=_int(block, "max_queue_delay_microseconds"),
            instance_count=max(1, instances),
            priority_levels=levels,
            default_priority_level=_int(block, "default_priority_level"),
            default_queue_policy=_queue_policy(block.get("default_queue_policy")),
            priority_queue_policy=policies,
        )
    except ValueError as exc:
        raise ModelConfigError(str(exc)) from exc
