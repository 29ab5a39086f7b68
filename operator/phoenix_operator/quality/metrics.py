"""Evaluation figures (pure): classification quality, urgent-class quality, retrieval hit@k.

The figures a finished evaluation Job reports go through ``termination_message``, which keeps
them under the 4096 bytes Kubernetes keeps of a container's termination message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

#: Kubernetes truncates a termination message beyond this many bytes.
TERMINATION_MESSAGE_LIMIT = 4096


@dataclass(frozen=True)
class ClassificationFigures:
    examples: int
    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]


@dataclass(frozen=True)
class UrgentFigures:
    """The most urgent routed class as a binary task: is a request that needs it sent to it?"""

    priority_class: str
    recall: float
    precision: float
    support: int
    predicted: int


@dataclass(frozen=True)
class RetrievalFigures:
    k: int
    queries: int
    hit_at_k: float


@dataclass(frozen=True)
class EvalReport:
    classification: ClassificationFigures
    urgent: UrgentFigures | None = None
    retrieval: RetrievalFigures | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def classification_figures(truth: Sequence[str], predicted: Sequence[str]) -> ClassificationFigures:
    """Accuracy, macro-F1 over the labels of ``truth``, and F1 of each of those labels."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    if not truth:
        raise ValueError("no examples to evaluate")
    labels = sorted(set(truth))
    per_class = f1_score(truth, predicted, labels=labels, average=None, zero_division=0)
    return ClassificationFigures(
        examples=len(truth),
        accuracy=float(accuracy_score(truth, predicted)),
        macro_f1=float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)),
        per_class_f1={label: float(f1) for label, f1 in zip(labels, per_class, strict=True)},
    )


def urgent_figures(priority_class: str, truth: Sequence[bool], predicted: Sequence[bool]) -> UrgentFigures:
    """Recall and precision of routing to the urgent class (0 when undefined: nothing urgent)."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} truths but {len(predicted)} predictions")
    return UrgentFigures(
        priority_class=priority_class,
        recall=float(recall_score(truth, predicted, zero_division=0)),
        precision=float(precision_score(truth, predicted, zero_division=0)),
        support=sum(truth),
        predicted=sum(predicted),
    )


def hit_at_k(relevant: Sequence[str], retrieved: Sequence[Sequence[str]], k: int) -> RetrievalFigures:
    """Share of queries whose relevant document is among the documents of the first ``k`` hits."""
    if len(relevant) != len(retrieved):
        raise ValueError(f"{len(relevant)} queries but {len(retrieved)} result lists")
    if not relevant:
        raise ValueError("no queries to evaluate")
    hits = sum(1 for gold, docs in zip(relevant, retrieved, strict=True) if gold in list(docs)[:k])
    return RetrievalFigures(k=k, queries=len(relevant), hit_at_k=hits / len(relevant))


def _round(value: float) -> float:
    return round(value, 4) if math.isfinite(value) else value


def report_dict(report: EvalReport, per_class: bool = True) -> dict[str, Any]:
    """The full report as JSON-ready data (what ``--json`` writes)."""
    c = report.classification
    out: dict[str, Any] = {
        "examples": c.examples,
        "accuracy": _round(c.accuracy),
        "macro_f1": _round(c.macro_f1),
    }
    if report.urgent is not None:
        u = report.urgent
        out["urgent"] = {
            "class": u.priority_class,
            "recall": _round(u.recall),
            "precision": _round(u.precision),
            "support": u.support,
            "predicted": u.predicted,
        }
    if report.retrieval is not None:
        r = report.retrieval
        out["retrieval"] = {"k": r.k, "queries": r.queries, "hit_at_k": _round(r.hit_at_k)}
    out.update(report.extra)
    if per_class:
        out["per_class_f1"] = {label: _round(f1) for label, f1 in c.per_class_f1.items()}
    return out


def termination_message(report: EvalReport, extra: Mapping[str, Any] | None = None) -> str:
    """Compact one-line JSON of the headline figures, always under the termination-message limit.

    Per-class F1 is left out (77 classes alone approach the limit); ``extra`` entries that would
    push it over are dropped, last first.
    """
    figures: dict[str, Any] = {
        "examples": report.classification.examples,
        "accuracy": _round(report.classification.accuracy),
        "macro_f1": _round(report.classification.macro_f1),
    }
    if report.urgent is not None:
        figures["urgent_class"] = report.urgent.priority_class
        figures["urgent_recall"] = _round(report.urgent.recall)
        figures["urgent_precision"] = _round(report.urgent.precision)
    if report.retrieval is not None:
        figures["k"] = report.retrieval.k
        figures["hit_at_k"] = _round(report.retrieval.hit_at_k)
    extras = list((extra or {}).items())
    while True:
        text = json.dumps({**figures, **dict(extras)}, separators=(",", ":"), sort_keys=True)
        if len(text.encode()) < TERMINATION_MESSAGE_LIMIT or not extras:
            return text
        extras.pop()


def render_table(report: EvalReport, worst: int = 10) -> str:
    """Plain-text summary: headline figures, then the ``worst`` classes by F1."""
    c = report.classification
    lines = [
        f"{'examples':<22}{c.examples:>10}",
        f"{'accuracy':<22}{c.accuracy:>10.4f}",
        f"{'macro-F1':<22}{c.macro_f1:>10.4f}",
    ]
    if report.urgent is not None:
        u = report.urgent
        lines += [
            f"{'urgent class':<22}{u.priority_class:>10}",
            f"{'urgent recall':<22}{u.recall:>10.4f}",
            f"{'urgent precision':<22}{u.precision:>10.4f}",
            f"{'urgent support':<22}{u.support:>10}",
        ]
    if report.retrieval is not None:
        r = report.retrieval
        lines += [f"{f'hit@{r.k}':<22}{r.hit_at_k:>10.4f}", f"{'retrieval queries':<22}{r.queries:>10}"]
    ranked = sorted(c.per_class_f1.items(), key=lambda item: (item[1], item[0]))[:worst]
    if ranked:
        lines += ["", f"lowest F1 ({len(ranked)} of {len(c.per_class_f1)} classes):"]
        width = max(len(label) for label, _ in ranked)
        lines += [f"  {label:<{width}}  {f1:.4f}" for label, f1 in ranked]
    return "\n".join(lines)
