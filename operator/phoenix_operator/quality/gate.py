"""Quality gates (pure): whether a new knowledge-base version or a fine-tuned LLM version may serve.

``refresh_gate`` uses the operator's own QualityGate rule, so an ingest judges a refresh exactly
as the operator does; ``model_gate`` judges a fine-tuning candidate on the spec's metric.
See docs/quality.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

# A module import, not a name: reconcile.quality imports this module while it initialises.
from phoenix_operator.status import quality as operator_quality

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
    decision = operator_quality.gate("refresh", {"hit_at_k": hit_at_k}, current, 0.0, max_drop)
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


#: Labels of the answer figures in verdict messages.
METRIC_LABELS = {"answer_f1": "answer F1", "exact_match": "exact match"}
BELOW_MIN_SCORE = "BelowMinScore"
REGRESSED = "Regressed"
NO_FIGURE = "NoFigure"


@dataclass(frozen=True)
class ModelVerdict:
    promote: bool
    #: ``Passed``, ``BelowMinScore``, ``Regressed`` or ``NoFigure``.
    reason: str
    #: Both figures and why, in one line.
    message: str
    candidate_score: float | None
    serving_score: float | None


def model_gate(
    metric: str,
    candidate: dict[str, float],
    serving_score: float | None,
    min_score: float,
    max_drop: float,
) -> ModelVerdict:
    """Promote a fine-tuned version only if its ``metric`` ≥ ``min_score`` and ≥ serving − ``max_drop``.

    Without a serving figure (the first fine-tune of a model nobody measured) only the floor
    applies; a candidate that did not report the judged figure cannot be judged and stays out.
    """
    for name, value in (("serving score", serving_score), ("floor", min_score), ("tolerance", max_drop)):
        if value is not None and not (math.isfinite(value) and 0 <= value <= 1):
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    label = METRIC_LABELS.get(metric, metric)
    score = candidate.get(metric)
    if score is None:
        reported = ", ".join(sorted(candidate)) or "none"
        return ModelVerdict(
            False, NO_FIGURE, f"the candidate reported no {label} (reported: {reported})", None, serving_score
        )
    both = f"candidate {label} {score:.4f}, serving " + (
        "unmeasured" if serving_score is None else f"{serving_score:.4f}"
    )
    if score < min_score:
        return ModelVerdict(
            False, BELOW_MIN_SCORE, f"{both}: below fineTuning.minScore {min_score:g}", score, serving_score
        )
    if serving_score is not None and score < serving_score - max_drop - 1e-12:
        return ModelVerdict(
            False,
            REGRESSED,
            f"{both}: more than fineTuning.maxScoreDrop {max_drop:g} below the serving version",
            score,
            serving_score,
        )
    return ModelVerdict(True, PASSED, f"{both}: promoted", score, serving_score)
