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
    from phoenix_operator.quality.kb import DOC_ID_FIELD
    from phoenix_operator.reconcile.retrieval import VECTOR_FIELD

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
