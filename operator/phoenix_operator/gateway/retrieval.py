"""Passage search in the knowledge-base collection (pymilvus; blocking, run in the I/O pool).

The collection schema is the one the retrieval reconciler creates
(:mod:`phoenix_operator.clients.milvus`): vectors in ``embedding``, passage text in ``text``.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from pymilvus import MilvusClient

from phoenix_operator.api.models import CollectionSpec
from phoenix_operator.clients.milvus import TEXT_FIELD, VECTOR_FIELD


class PassageSearch:
    """Top-k passages for a query vector, with a client created on first use and reused."""

    def __init__(
        self,
        uri: str,
        collection: CollectionSpec,
        top_k: int,
        *,
        token: str | None,
        db_name: str,
        timeout_s: float,
    ) -> None:
        self.uri = uri
        self.collection = collection
        self.top_k = top_k
        self.token = token
        self.db_name = db_name
        self.timeout_s = timeout_s
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()

    def _connected(self) -> MilvusClient:
        with self._lock:
            if self._client is None:
                kwargs: dict[str, Any] = {"timeout": self.timeout_s}
                if self.token:
                    kwargs["token"] = self.token
                if self.db_name != "default":
                    kwargs["db_name"] = self.db_name
                self._client = MilvusClient(self.uri, **kwargs)
            return self._client

    def search(self, vector: np.ndarray) -> list[str]:
        """Passage texts, best first."""
        hits = self._connected().search(
            collection_name=self.collection.name,
            data=[vector.astype(np.float32).tolist()],
            anns_field=VECTOR_FIELD,
            limit=self.top_k,
            search_params={
                "metric_type": str(self.collection.metric),
                "params": dict(self.collection.search_params),
            },
            output_fields=[TEXT_FIELD],
            timeout=self.timeout_s,
        )
        texts = []
        for hit in hits[0] if hits else []:
            entity = hit.get("entity", {}) if isinstance(hit, dict) else hit["entity"]
            text = entity.get(TEXT_FIELD)
            if isinstance(text, str) and text:
                texts.append(text)
        return texts

    def not_ready(self) -> str | None:
        """``None`` when the collection exists (Milvus reachable), else why not (for /readyz)."""
        try:
            if not self._connected().has_collection(self.collection.name, timeout=self.timeout_s):
                return f"collection {self.collection.name!r} does not exist in Milvus at {self.uri}"
        except Exception as exc:  # pymilvus raises many types (MilvusException, gRPC, OSError, ValueError)
            with self._lock:
                self._client = None  # reconnect next time: a failed client may hold a dead channel
            return f"Milvus at {self.uri} unreachable: {type(exc).__name__}: {exc}"
        return None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
