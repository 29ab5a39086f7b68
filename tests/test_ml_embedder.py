"""all-MiniLM-L6-v2 on onnxruntime against sentence-transformers' own embeddings, and on BANKING77."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from phoenix_operator.data import banking77
from phoenix_operator.ml.classifier import read_labelled_csv
from phoenix_operator.ml.embedder import Embedder

REFERENCE = Path(__file__).parent / "data" / "minilm" / "reference.json"
#: Cosine to sentence-transformers' vector below which the graph is not the same model.
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load(threads=2)


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


def _cosines(vectors: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return (vectors * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)


def test_contract_attributes(embedder: Embedder) -> None:
    assert embedder.name == "all-MiniLM-L6-v2"
    assert embedder.dimension == 384


def test_batch_matches_sentence_transformers(embedder: Embedder, reference: dict) -> None:
    texts = reference["texts"]
    assert "" in texts and any(len(t.split()) > 256 for t in texts)
    vectors = embedder.embed(texts)
    assert vectors.shape == (len(texts), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = _cosines(vectors, np.array(reference["embeddings"], dtype=np.float32))
    worst = int(cosines.argmin())
    assert cosines.min() >= MIN_COSINE, f"{texts[worst]!r}: cosine {cosines[worst]}"


def test_single_texts_match_sentence_transformers(embedder: Embedder, reference: dict) -> None:
    """One text at a time (no padding), as the gateway embeds a query."""
    expected = np.array(reference["embeddings"], dtype=np.float32)
    vectors = np.vstack([embedder.embed([text]) for text in reference["texts"]])
    assert _cosines(vectors, expected).min() >= MIN_COSINE


def test_text_past_the_window_is_truncated(embedder: Embedder) -> None:
    long = " ".join(["my card payment was declined"] * 80)
    vectors = embedder.embed([long, long + " but then my phone was stolen too"])
    assert float(vectors[0] @ vectors[1]) > 0.99999


def test_empty_batch_and_bare_string(embedder: Embedder) -> None:
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(TypeError, match="sequence of texts"):
        embedder.embed("not a list")  # type: ignore[arg-type]


def test_nearest_neighbour_recovers_banking77_intents(embedder: Embedder) -> None:
    """1-NN label accuracy of test queries against train queries (77 intents, chance 1.3%).

    Measured on this subsample (every 10th train, every 6th test row): 0.821; on the full splits
    0.920. The floor catches a graph that is numerically close yet semantically broken.
    """
    train_texts, train_labels = read_labelled_csv(banking77("train"))
    test_texts, test_labels = read_labelled_csv(banking77("test"))
    train = embedder.embed_batched(train_texts[::10])
    test = embedder.embed_batched(test_texts[::6])
    nearest = (test @ train.T).argmax(axis=1)
    accuracy = float(np.mean(np.array(train_labels[::10])[nearest] == np.array(test_labels[::6])))
    assert accuracy >= 0.78
