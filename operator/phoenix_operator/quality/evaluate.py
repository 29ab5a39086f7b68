"""Offline evaluation: the intent classifier (and its routing) on a labelled CSV, retrieval hit@k.

The labelled set is ``text,label`` (BANKING77's ``text,category`` too) with an optional
``doc_id``, the id of the document that answers the text. Urgency is judged the way the gateway
routes: a text is urgent when ``choose_class`` sends its true intent (with certainty) to the most
urgent routed class, and predicted urgent when it sends the classifier's prediction there.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from phoenix_operator.api.models import CollectionSpec, PhoenixDeploymentSpec
from phoenix_operator.quality.metrics import (
    RetrievalFigures,
    UrgentFigures,
    hit_at_k,
    urgent_figures,
)

if TYPE_CHECKING:
    from pymilvus import MilvusClient

    from phoenix_operator.ml.classifier import Prediction
    from phoenix_operator.quality.kb import TextEmbedder

LABEL_COLUMNS = ("label", "category")
SEARCH_BATCH = 64


class DataError(ValueError):
    """The labelled set cannot be read; the message names the line."""


@dataclass(frozen=True)
class LabelledSet:
    texts: list[str]
    labels: list[str]
    doc_ids: list[str | None]

    @property
    def has_doc_ids(self) -> bool:
        return any(d is not None for d in self.doc_ids)


def parse_labelled(text: str, location: str = "data") -> LabelledSet:
    """Rows of ``text`` and ``label`` (or ``category``), optional ``doc_id``; blank doc ids are None."""
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    label_column = next((c for c in LABEL_COLUMNS if c in columns), None)
    if "text" not in columns or label_column is None:
        raise DataError(
            f"{location}: the CSV needs columns text and label (or category); it has: {', '.join(columns)}"
        )
    texts, labels, doc_ids = [], [], []
    for row in reader:
        where = f"{location}:{reader.line_num}"
        body, label = (row.get("text") or "").strip(), (row.get(label_column) or "").strip()
        if not body or not label:
            raise DataError(f"{where}: empty text or {label_column}")
        texts.append(body)
        labels.append(label)
        doc_ids.append((row.get("doc_id") or "").strip() or None)
    if not texts:
        raise DataError(f"{location}: no rows")
    return LabelledSet(texts, labels, doc_ids)


def most_urgent_routed_class(spec: PhoenixDeploymentSpec) -> str | None:
    """The class with the lowest Triton level among those the routes send to (None without routes)."""
    if spec.priority is None or not spec.gateway.routes:
        return None
    levels = {c.name: c.level for c in spec.priority.classes}
    routed = {r.priority_class for r in spec.gateway.routes if r.priority_class in levels}
    return min(routed, key=lambda name: (levels[name], name)) if routed else None


def urgent_from_routes(
    spec: PhoenixDeploymentSpec, labels: Sequence[str], predictions: Sequence[Prediction]
) -> UrgentFigures | None:
    """Routing quality for the most urgent routed class, through the gateway's ``choose_class``."""
    from phoenix_operator.ml.classifier import Prediction
    from phoenix_operator.ml.routing import choose_class

    urgent = most_urgent_routed_class(spec)
    if urgent is None:
        return None
    truth = [
        choose_class(spec, Prediction(label, 1.0, {label: 1.0})).priority_class == urgent for label in labels
    ]
    predicted = [choose_class(spec, p).priority_class == urgent for p in predictions]
    return urgent_figures(urgent, truth, predicted)


def search_doc_ids(
    client: MilvusClient, collection: CollectionSpec, vectors: np.ndarray, k: int
) -> list[list[str]]:
    """Document ids of the top-``k`` chunks for each query vector, searched in ``collection.name``
    (the alias, or one version of it)."""
    from phoenix_operator.clients.milvus import VECTOR_FIELD
    from phoenix_operator.quality.kb import DOC_ID_FIELD

    out: list[list[str]] = []
    for start in range(0, len(vectors), SEARCH_BATCH):
        results = client.search(
            collection.name,
            [v.tolist() for v in vectors[start : start + SEARCH_BATCH]],
            anns_field=VECTOR_FIELD,
            limit=k,
            search_params={"params": dict(collection.search_params)},
            output_fields=[DOC_ID_FIELD],
        )
        out.extend([str(hit["entity"][DOC_ID_FIELD]) for hit in hits] for hits in results)
    return out


def retrieved_doc_ids(
    client: MilvusClient,
    collection: CollectionSpec,
    embedder: TextEmbedder,
    texts: Sequence[str],
    k: int,
) -> list[list[str]]:
    """Document ids of the top-``k`` chunks for each text, searched through the collection's alias."""
    vectors = np.concatenate(
        [embedder.embed(list(texts[s : s + SEARCH_BATCH])) for s in range(0, len(texts), SEARCH_BATCH)]
    )
    return search_doc_ids(client, collection, vectors, k)


def retrieval_figures(
    client: MilvusClient,
    collection: CollectionSpec,
    embedder: TextEmbedder,
    data: LabelledSet,
    k: int,
) -> RetrievalFigures:
    """hit@k over the rows that name a ``doc_id``."""
    return retrieval_figures_of(client, [collection.name], collection, embedder, data, k)[0]


def retrieval_figures_of(
    client: MilvusClient,
    names: Sequence[str],
    collection: CollectionSpec,
    embedder: TextEmbedder,
    data: LabelledSet,
    k: int,
) -> list[RetrievalFigures]:
    """hit@k of each collection in ``names`` (versions of ``collection``), embedding the queries once."""
    rows = [(t, d) for t, d in zip(data.texts, data.doc_ids, strict=True) if d is not None]
    if not rows:
        raise DataError("retrieval hit@k needs rows with a doc_id")
    texts = [t for t, _ in rows]
    vectors = np.concatenate(
        [embedder.embed(texts[s : s + SEARCH_BATCH]) for s in range(0, len(texts), SEARCH_BATCH)]
    )
    relevant = [d for _, d in rows]
    return [
        hit_at_k(relevant, search_doc_ids(client, collection.model_copy(update={"name": n}), vectors, k), k)
        for n in names
    ]


# --------------------------------------------------------------------------------------------
# answer quality (a fine-tuned LLM's held-out answers)

_ARTICLES = {"a", "an", "the"}


def answer_tokens(text: str) -> list[str]:
    """SQuAD's normalisation: lower case, punctuation and articles dropped, whitespace collapsed."""
    kept = "".join(ch if ch.isalnum() or ch.isspace() else " " for ch in text.lower())
    return [t for t in kept.split() if t not in _ARTICLES]


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall (tokens counted with multiplicity)."""
    predicted, expected = answer_tokens(prediction), answer_tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    remaining = list(expected)
    common = 0
    for token in predicted:
        if token in remaining:
            remaining.remove(token)
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class AnswerFigures:
    answer_f1: float
    exact_match: float
    examples: int

    def as_metrics(self) -> dict[str, float]:
        """The ``metrics`` object of a fine-tuning report."""
        return {"answer_f1": round(self.answer_f1, 4), "exact_match": round(self.exact_match, 4)}


def answer_scores(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> AnswerFigures:
    """Mean token F1 and exact match of ``predictions``, each against its best reference answer."""
    if len(predictions) != len(references):
        raise DataError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise DataError("no answers to score")
    f1_total = exact_total = 0.0
    for prediction, refs in zip(predictions, references, strict=True):
        options = [refs] if isinstance(refs, str) else list(refs)
        if not options:
            raise DataError("a question without a reference answer cannot be scored")
        f1_total += max(token_f1(prediction, r) for r in options)
        exact_total += max(float(answer_tokens(prediction) == answer_tokens(r)) for r in options)
    n = len(predictions)
    return AnswerFigures(f1_total / n, exact_total / n, n)
