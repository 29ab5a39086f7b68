"""Triton's dynamic-batching configuration, mirrored field for field from ``model_config.proto``.

The simulator, the control-loop policies and the fidelity harness all speak this one
type, so a configuration that is simulated is byte-for-byte the one that would be sent to Triton
(:meth:`BatcherConfig.to_pbtxt`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

TimeoutAction = Literal["REJECT", "DELAY"]


@dataclass(frozen=True)
class QueuePolicy:
    """``ModelQueuePolicy``: what happens to requests of one priority level while they queue."""

    #: REJECT answers a timed-out request with UNAVAILABLE; DELAY moves it behind the
    #: un-expired requests of its level (it is still served, later).
    timeout_action: TimeoutAction = "REJECT"
    #: 0 = no timeout.
    default_timeout_us: int = 0
    #: Whether a request's own timeout may *shorten* the default (Triton never lengthens it,
    #: and with ``default_timeout_us == 0`` an override is ignored).
    allow_timeout_override: bool = False
    #: 0 = unbounded. Counted per priority level (each level has its own policy queue).
    max_queue_size: int = 0

    def timeout_for(self, request_timeout_us: int) -> int:
        """Effective timeout in µs for a request, following ``PolicyQueue::Enqueue``."""
        timeout = self.default_timeout_us
        if self.allow_timeout_override and request_timeout_us != 0 and request_timeout_us < timeout:
            timeout = request_timeout_us
        return timeout

    @property
    def is_default(self) -> bool:
        return self == QueuePolicy()


@dataclass(frozen=True)
class BatcherConfig:
    """``max_batch_size`` + ``dynamic_batching`` + the instance-group count of one Triton model."""

    max_batch_size: int = 8
    #: Empty means "not set": Triton then uses ``[max_batch_size]`` (NormalizeModelConfig).
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    #: Model instances per replica (``instance_group.count``).
    instance_count: int = 1
    #: 0 = priorities disabled (one queue). Levels are 1..priority_levels, 1 is served first.
    priority_levels: int = 0
    default_priority_level: int = 0
    default_queue_policy: QueuePolicy = field(default_factory=QueuePolicy)
    #: Per-level overrides of ``default_queue_policy``.
    priority_queue_policy: Mapping[int, QueuePolicy] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1 (dynamic batching needs batching enabled)")
        if any(size < 1 or size > self.max_batch_size for size in self.preferred_batch_sizes):
            raise ValueError("preferred batch sizes must lie in 1..max_batch_size")
        if self.instance_count < 1:
            raise ValueError("instance_count must be >= 1")
        if self.max_queue_delay_us < 0:
            raise ValueError("max_queue_delay_us must be >= 0")
        if self.priority_levels < 0:
            raise ValueError("priority_levels must be >= 0")
        if self.priority_levels and not 1 <= self.default_priority_level <= self.priority_levels:
            raise ValueError("default_priority_level must lie in 1..priority_levels")

    @property
    def effective_preferred(self) -> tuple[int, ...]:
        """Preferred sizes as Triton uses them: sorted, unique, ``[max_batch_size]`` if unset."""
        if not self.preferred_batch_sizes:
            return (self.max_batch_size,)
        return tuple(sorted(set(self.preferred_batch_sizes)))

    def policy_for(self, level: int) -> QueuePolicy:
        return self.priority_queue_policy.get(level, self.default_queue_policy)

    def level_for(self, priority: int) -> int:
        """Priority level a request lands in (``InferenceRequest::SetPriority``).

        0 or out-of-range priorities fall back to the default level; with priorities disabled
        everything shares level 0.
        """
        if self.priority_levels == 0:
            return 0
        if priority == 0 or priority > self.priority_levels:
            return self.default_priority_level
        return priority

    @property
    def supports_prefetching(self) -> bool:
        """Triton forms batches ahead of a free instance only without priorities and queue policy."""
        policy = self.default_queue_policy
        return (
            self.priority_levels == 0
            and policy.default_timeout_us == 0
            and not policy.allow_timeout_override
            and policy.max_queue_size == 0
        )

    def with_changes(self, **changes: Any) -> BatcherConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON/YAML (status, decision records, benchmark output)."""
        out: dict[str, Any] = {
            "max_batch_size": self.max_batch_size,
            "preferred_batch_sizes": list(self.preferred_batch_sizes),
            "max_queue_delay_us": self.max_queue_delay_us,
            "instance_count": self.instance_count,
            "priority_levels": self.priority_levels,
            "default_priority_level": self.default_priority_level,
        }
        if not self.default_queue_policy.is_default:
            out["default_queue_policy"] = _policy_dict(self.default_queue_policy)
        if self.priority_queue_policy:
            out["priority_queue_policy"] = {
                int(level): _policy_dict(policy)
                for level, policy in sorted(self.priority_queue_policy.items())
            }
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatcherConfig:
        policies = {
            int(level): _policy_from(value)
            for level, value in (data.get("priority_queue_policy") or {}).items()
        }
        return cls(
            max_batch_size=int(data.get("max_batch_size", 8)),
            preferred_batch_sizes=tuple(int(s) for s in data.get("preferred_batch_sizes") or ()),
            max_queue_delay_us=int(data.get("max_queue_delay_us", 0)),
            instance_count=int(data.get("instance_count", 1)),
            priority_levels=int(data.get("priority_levels", 0)),
            default_priority_level=int(data.get("default_priority_level", 0)),
            default_queue_policy=_policy_from(data.get("default_queue_policy") or {}),
            priority_queue_policy=policies,
        )

    def to_pbtxt(self) -> str:
        """The ``max_batch_size``/``dynamic_batching``/``instance_group`` part of a config.pbtxt."""
        lines = [f"max_batch_size: {self.max_batch_size}", "dynamic_batching {"]
        if self.preferred_batch_sizes:
            sizes = ", ".join(str(s) for s in self.preferred_batch_sizes)
            lines.append(f"  preferred_batch_size: [ {sizes} ]")
        lines.append(f"  max_queue_delay_microseconds: {self.max_queue_delay_us}")
        if self.priority_levels:
            lines.append(f"  priority_levels: {self.priority_levels}")
            lines.append(f"  default_priority_level: {self.default_priority_level}")
        if not self.default_queue_policy.is_default:
            lines.append("  default_queue_policy {")
            lines.extend(_policy_pbtxt(self.default_queue_policy, "    "))
            lines.append("  }")
        for level, policy in sorted(self.priority_queue_policy.items()):
            lines.append("  priority_queue_policy {")
            lines.append(f"    key: {level}")
            lines.append("    value {")
            lines.extend(_policy_pbtxt(policy, "      "))
            lines.append("    }")
            lines.append("  }")
        lines.append("}")
        lines.append(f"instance_group [ {{ count: {self.instance_count} }} ]")
        return "\n".join(lines) + "\n"


def _policy_dict(policy: QueuePolicy) -> dict[str, Any]:
    return {
        "timeout_action": policy.timeout_action,
        "default_timeout_us": policy.default_timeout_us,
        "allow_timeout_override": policy.allow_timeout_override,
        "max_queue_size": policy.max_queue_size,
    }


def _policy_from(data: Mapping[str, Any]) -> QueuePolicy:
    action = str(data.get("timeout_action", "REJECT")).upper()
    if action not in ("REJECT", "DELAY"):
        raise ValueError(f"timeout_action must be REJECT or DELAY, not {action!r}")
    return QueuePolicy(
        timeout_action="DELAY" if action == "DELAY" else "REJECT",
        default_timeout_us=int(data.get("default_timeout_us", 0)),
        allow_timeout_override=bool(data.get("allow_timeout_override", False)),
        max_queue_size=int(data.get("max_queue_size", 0)),
    )


def _policy_pbtxt(policy: QueuePolicy, indent: str) -> list[str]:
    return [
        f"{indent}timeout_action: {policy.timeout_action}",
        f"{indent}default_timeout_microseconds: {policy.default_timeout_us}",
        f"{indent}allow_timeout_override: {'true' if policy.allow_timeout_override else 'false'}",
        f"{indent}max_queue_size: {policy.max_queue_size}",
    ]
