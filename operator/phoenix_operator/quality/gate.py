"""The knowledge-base refresh gate (pure): whether a new version's retrieval is good enough to serve.

``phoenix kb ingest --eval`` measures hit@k of the new version and of the one the alias serves,
then asks ``refresh_gate``. The regression rule is the operator's own QualityGate
(``reconcile.quality.gate``, kind ``refresh``), so a refresh is judged the same way before the
alias moves as the operator judges a reported one; the optional floor is the ingest's own.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from phoenix_operator.reconcile.quality import gate as quality_gate

DEFAULT_MAX_HIT_AT_K_DROP = 0.02
#: ``phoenix kb ingest`` exits with this status when the gate keeps the alias where it was.
EXIT_REJECTED = 3

PASSED = "Passed"
BELOW_MIN = "BelowMinHitAtK"
UNCHANGED = "Unchanged"


@dataclass(frozen=True)
class RefreshVerdict:
    promote: bool
    #: ``Passed``, ``BelowMinHitAtK`` or the QualityGate's reason (``Regressed``).
    reason: str
    #: Both figures and why, in one line.
    message: str
    hit_at_k: float
    current_hit_at_k: float | None


def refresh_gate(
    hit_at_k: float, current_hit_at_k: float | None, min_hit_at_k: float | None, max_drop: float
) -> RefreshVerdict:
    """Promote only when hit@k ≥ ``min_hit_at_k`` (if given) and ≥ the current one − ``max_drop``.

    Without a current figure (the first version) only the floor applies.
    """
    for name, value in (("hit@k", hit_at_k), ("current hit@k", current_hit_at_k), ("floor", min_hit_at_k)):
        if value is not None and not (math.isfinite(value) and 0 <= value <= 1):
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    if not (math.isfinite(max_drop) and 0 <= max_drop <= 1):
        raise ValueError(f"the allowed drop must be in [0, 1], got {max_drop!r}")
    current = {} if current_hit_at_k is None else {"hit_at_k": current_hit_at_k}
    if min_hit_at_k is not None and hit_at_k < min_hit_at_k:
        now = "none" if current_hit_at_k is None else f"{current_hit_at_k:.4f}"
        message = f"candidate hit@k {hit_at_k:.4f}, current {now}: below --min-hit-at-k {min_hit_at_k:g}"
        return RefreshVerdict(False, BELOW_MIN, message, hit_at_k, current_hit_at_k)
    decision = quality_gate("refresh", {"hit_at_k": hit_at_k}, current, 0.0, max_drop)
    return RefreshVerdict(decision.passed, decision.reason, decision.message, hit_at_k, current_hit_at_k)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def refresh_message(
    verdict: RefreshVerdict,
    *,
    promoted: bool,
    k: int,
    queries: int,
    version: str,
    previous: str | None,
    unchanged: bool = False,
) -> str:
    """The refresh job's termination message: one compact JSON line (names are ≤ 255 characters,
    so it stays far under Kubernetes' 4096 bytes)."""
    payload = {
        "hit_at_k": _round(verdict.hit_at_k),
        "current_hit_at_k": _round(verdict.current_hit_at_k),
        "promoted": promoted,
        "reason": UNCHANGED if unchanged else verdict.reason,
        "k": k,
        "queries": queries,
        "version": version,
        "previous": previous,
    }
    if unchanged:
        payload["unchanged"] = True
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)
