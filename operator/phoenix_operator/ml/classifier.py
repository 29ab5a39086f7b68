"""Intent classifier: TF-IDF word and character n-grams plus the MiniLM embedding, one linear model.

Probabilities are calibrated (a fitted softmax temperature) because the routing rule sums them;
artifacts are plain arrays, no pickle, because a classifier may come from a URL and unpickling runs
code. Details: docs/classifier.md, "Intent classifier".
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from phoenix_operator.settings import cache_root

if TYPE_CHECKING:
    from phoenix_operator.ml.embedder import Embedder

FORMAT = "phoenix-intent-classifier"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
ARRAYS_FILE = "arrays.npz"
#: Feature blocks in the order their weights are stacked.
SPARSE_BLOCKS = ("word", "char")


@dataclass(frozen=True)
class Prediction:
    """The top intent, its probability, and every intent's probability (they sum to 1)."""

    intent: str
    confidence: float
    probabilities: dict[str, float]


class ClassifierError(ValueError):
    """A classifier directory or training set that cannot be used, with the reason."""


@dataclass(frozen=True)
class FeatureConfig:
    """What the classifier is made of; part of the cache key of the default classifier."""

    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    char_min_df: int = 2
    #: Scale of the MiniLM embedding block against the unit-norm TF-IDF blocks; 0 leaves it out.
    embedding_weight: float = 2.0
    svm_c: float = 1.0
    #: Share of the training set held out to fit the softmax temperature.
    calibration_share: float = 0.2
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureConfig:
        def pair(value: Any) -> tuple[int, int]:
            low, high = value
            return int(low), int(high)

        return cls(
            word_ngrams=pair(raw["word_ngrams"]),
            char_ngrams=pair(raw["char_ngrams"]),
            char_min_df=int(raw["char_min_df"]),
            embedding_weight=float(raw["embedding_weight"]),
            svm_c=float(raw["svm_c"]),
            calibration_share=float(raw["calibration_share"]),
            seed=int(raw["seed"]),
        )

    def vectoriser_params(self, block: str) -> dict[str, Any]:
        """TfidfVectorizer arguments of a sparse block (the analyzer is rebuilt from these at load)."""
        if block == "word":
            return {
                "analyzer": "word",
                "ngram_range": self.word_ngrams,
                "lowercase": True,
                "sublinear_tf": True,
            }
        return {
            "analyzer": "char_wb",
            "ngram_range": self.char_ngrams,
            "lowercase": True,
            "sublinear_tf": True,
            "min_df": self.char_min_df,
        }


@dataclass
class _SparseBlock:
    """One TF-IDF vocabulary with its rows of the weight matrix, scored without scipy."""

    analyzer: Callable[[str], list[str]]
    vocabulary: dict[str, int]
    idf: np.ndarray
    weights: np.ndarray  # (len(vocabulary), n_labels)

    def scores(self, text: str) -> np.ndarray | None:
        counts = Counter(i for tok in self.analyzer(text) if (i := self.vocabulary.get(tok)) is not None)
        if not counts:
            return None
        idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        values = (1.0 + np.log(tf)) * self.idf[idx]
        values /= np.linalg.norm(values)
        return values @ self.weights[idx]


def _analyzer(params: dict[str, Any]) -> Callable[[str], list[str]]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    analyzer: Callable[[str], list[str]] = TfidfVectorizer(**params).build_analyzer()
    return analyzer


def training_data_hash(texts: Sequence[str], labels: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text, label in zip(texts, labels, strict=True):
        digest.update(json.dumps([text, label], ensure_ascii=False).encode("utf-8") + b"\n")
    return "sha256:" + digest.hexdigest()


class IntentClassifier:
    """Maps a customer query to one of the training labels with calibrated probabilities."""

    def __init__(
        self,
        labels: list[str],
        config: FeatureConfig,
        blocks: dict[str, _SparseBlock],
        embedding_weights: np.ndarray | None,
        bias: np.ndarray,
        temperature: float,
        metadata: dict[str, Any],
    ) -> None:
        self.labels = labels
        self.config = config
        self.metadata = metadata
        self._blocks = blocks
        self._embedding_weights = embedding_weights  # (dimension, n_labels), already scaled
        self._bias = bias
        self._temperature = temperature
        self._embedder: Embedder | None = None
        self._embedder_lock = threading.Lock()

    @property
    def uses_embedding(self) -> bool:
        return self._embedding_weights is not None

    @property
    def embedding_dimension(self) -> int:
        return 0 if self._embedding_weights is None else int(self._embedding_weights.shape[0])

    def _get_embedder(self) -> Embedder:
        with self._embedder_lock:
            if self._embedder is None:
                from phoenix_operator.ml.embedder import shared_embedder

                self._embedder = shared_embedder(threads=1)
            return self._embedder

    def scores(self, text: str, embedding: np.ndarray | None = None) -> np.ndarray:
        """Raw linear scores, one per label."""
        total = self._bias.astype(np.float64)
        for block in self._blocks.values():
            part = block.scores(text)
            if part is not None:
                total = total + part
        if self._embedding_weights is not None:
            if embedding is None:
                embedding = self._get_embedder().embed([text])[0]
            vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
            if vector.shape != (self.embedding_dimension,):
                raise ValueError(
                    f"embedding has shape {np.shape(embedding)}, expected ({self.embedding_dimension},) "
                    "from the same embedder the classifier was trained with"
                )
            total = total + vector @ self._embedding_weights
        return total

    def _prediction(self, scores: np.ndarray) -> Prediction:
        logits = scores * self._temperature
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = int(probs.argmax())
        return Prediction(
            intent=self.labels[top],
            confidence=float(probs[top]),
            probabilities={label: float(p) for label, p in zip(self.labels, probs, strict=True)},
        )

    def predict(self, text: str, embedding: np.ndarray | None = None) -> Prediction:
        """Classify one query; pass the query's MiniLM embedding if it is already computed."""
        return self._prediction(self.scores(text, embedding))

    def predict_many(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> list[Prediction]:
        """Classify many queries, embedding them in batches."""
        if embeddings is None and self.uses_embedding:
            embeddings = self._get_embedder().embed_batched(texts)
        return [
            self.predict(text, None if embeddings is None else embeddings[i]) for i, text in enumerate(texts)
        ]

    # ---------------------------------------------------------------------------------------
    # artifact

    def save(self, directory: Path) -> None:
        """Write ``metadata.json`` and ``arrays.npz`` into ``directory`` (created if missing)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"bias": self._bias}
        for name, block in self._blocks.items():
            terms = sorted(block.vocabulary, key=block.vocabulary.__getitem__)
            arrays[f"{name}_vocabulary"] = np.array(terms, dtype=np.str_)
            arrays[f"{name}_idf"] = block.idf
            arrays[f"{name}_weights"] = block.weights
        if self._embedding_weights is not None:
            arrays["embedding_weights"] = self._embedding_weights
        np.savez_compressed(directory / ARRAYS_FILE, **arrays)
        meta = {**self.metadata, "labels": self.labels, "temperature": self._temperature}
        (directory / METADATA_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, directory: Path) -> IntentClassifier:
        """Read a classifier directory, checking that every part is present and consistent."""
        directory = Path(directory)
        meta_path, arrays_path = directory / METADATA_FILE, directory / ARRAYS_FILE
        if not directory.is_dir():
            raise ClassifierError(f"classifier directory {directory} does not exist")
        if not meta_path.is_file() or not arrays_path.is_file():
            raise ClassifierError(
                f"{directory} is not a classifier directory: it needs {METADATA_FILE} and {ARRAYS_FILE} "
                "(written by `phoenix classifier train --out`)"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ClassifierError(f"{meta_path} is not valid JSON: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ClassifierError(f"{meta_path} is not a {FORMAT} metadata file")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ClassifierError(
                f"{directory} has format version {meta.get('format_version')!r}; this release reads "
                f"{FORMAT_VERSION}: retrain with `phoenix classifier train`"
            )
        labels = meta.get("labels")
        if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
            raise ClassifierError(f"{meta_path}: labels must be a list of at least two strings")
        if len(set(labels)) != len(labels):
            raise ClassifierError(f"{meta_path}: labels repeat")
        temperature = meta.get("temperature")
        if not isinstance(temperature, int | float) or not math.isfinite(temperature) or temperature <= 0:
            raise ClassifierError(f"{meta_path}: temperature must be a positive number")
        try:
            config = FeatureConfig.from_dict(meta["feature_config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ClassifierError(f"{meta_path}: feature_config is missing or malformed ({exc})") from exc
        try:
            with np.load(arrays_path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise ClassifierError(f"{arrays_path} cannot be read: {exc}") from exc
        n = len(labels)

        def array(name: str, shape: tuple[int | None, ...]) -> np.ndarray:
            if name not in arrays:
                raise ClassifierError(f"{arrays_path} lacks the array {name!r}")
            value = arrays[name]
            if value.shape != tuple(
                d if s is None else s for s, d in zip(shape, value.shape, strict=False)
            ) or (value.ndim != len(shape)):
                raise ClassifierError(f"{arrays_path}: {name} has shape {value.shape}, expected {shape}")
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise ClassifierError(f"{arrays_path}: {name} holds non-finite numbers")
            return value

        blocks = {}
        for name in SPARSE_BLOCKS:
            terms = array(f"{name}_vocabulary", (None,))
            size = len(terms)
            blocks[name] = _SparseBlock(
                analyzer=_analyzer(config.vectoriser_params(name)),
                vocabulary={str(t): i for i, t in enumerate(terms)},
                idf=array(f"{name}_idf", (size,)).astype(np.float64),
                weights=np.ascontiguousarray(array(f"{name}_weights", (size, n)), dtype=np.float64),
            )
        embedding_weights = None
        if config.embedding_weight > 0:
            embedding_weights = np.ascontiguousarray(array("embedding_weights", (None, n)), dtype=np.float32)
        return cls(
            labels=list(labels),
            config=config,
            blocks=blocks,
            embedding_weights=embedding_weights,
            bias=array("bias", (n,)).astype(np.float64),
            temperature=float(temperature),
            metadata={k: v for k, v in meta.items() if k not in ("labels", "temperature")},
        )


# -------------------------------------------------------------------------------------------
# training


@dataclass
class _Features:
    vectorisers: dict[str, Any]
    matrix: Any  # scipy.sparse.csr_matrix


def _fit_features(texts: Sequence[str], embeddings: np.ndarray | None, config: FeatureConfig) -> _Features:
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorisers = {name: TfidfVectorizer(**config.vectoriser_params(name)) for name in SPARSE_BLOCKS}
    parts = [vec.fit_transform(texts) for vec in vectorisers.values()]
    if embeddings is not None:
        parts.append(sparse.csr_matrix(embeddings * config.embedding_weight))
    return _Features(vectorisers, sparse.hstack(parts).tocsr())


def _transform(
    features: _Features, texts: Sequence[str], embeddings: np.ndarray | None, weight: float
) -> Any:
    from scipy import sparse

    parts = [vec.transform(texts) for vec in features.vectorisers.values()]
    if embeddings is not None:
        parts.append(sparse.csr_matrix(embeddings * weight))
    return sparse.hstack(parts).tocsr()


def _fit_temperature(scores: np.ndarray, targets: np.ndarray) -> float:
    """Softmax temperature minimising held-out negative log-likelihood."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    def nll(log_t: float) -> float:
        return float(-log_softmax(scores * math.exp(log_t), axis=1)[np.arange(len(targets)), targets].mean())

    result = minimize_scalar(nll, bounds=(-4.0, 6.0), method="bounded")
    return float(math.exp(result.x))


def _svm(config: FeatureConfig) -> Any:
    from sklearn.svm import LinearSVC

    return LinearSVC(C=config.svm_c, random_state=config.seed)


@dataclass
class EvalReport:
    macro_f1: float
    accuracy: float
    rows: int
    predictions: list[Prediction] = field(repr=False, default_factory=list)


def evaluate(classifier: IntentClassifier, texts: Sequence[str], labels: Sequence[str]) -> EvalReport:
    """Macro-F1 and accuracy of ``classifier`` on a labelled set."""
    from sklearn.metrics import accuracy_score, f1_score

    predictions = classifier.predict_many(texts)
    predicted = [p.intent for p in predictions]
    return EvalReport(
        macro_f1=float(f1_score(list(labels), predicted, average="macro")),
        accuracy=float(accuracy_score(list(labels), predicted)),
        rows=len(texts),
        predictions=predictions,
    )


def train_classifier(
    texts: Sequence[str],
    labels: Sequence[str],
    config: FeatureConfig | None = None,
    *,
    embedder: Embedder | None = None,
    embeddings: np.ndarray | None = None,
    eval_set: tuple[Sequence[str], Sequence[str]] | None = None,
) -> IntentClassifier:
    """Fit the classifier; ``eval_set`` (texts, labels) adds held-out figures to its metadata.

    ``embeddings`` of ``texts`` may be given when already computed; otherwise ``embedder`` (or
    the shared all-MiniLM-L6-v2 on the machine's cores) computes them.
    """
    config = config or FeatureConfig()
    texts, labels = list(texts), list(labels)
    if len(texts) != len(labels):
        raise ClassifierError(f"{len(texts)} texts but {len(labels)} labels")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ClassifierError("training needs at least two distinct labels")
    if config.embedding_weight > 0 and embeddings is None:
        if embedder is None:
            from phoenix_operator.ml.embedder import shared_embedder

            embedder = shared_embedder(threads=max(1, min(4, os.cpu_count() or 1)))
        embeddings = embedder.embed_batched(texts)
    if config.embedding_weight <= 0:
        embeddings = None
    elif embeddings is None or embeddings.shape[0] != len(texts):
        raise ClassifierError("embeddings must have one row per training text")
    y = _indices(labels, classes)

    temperature = _calibrate(texts, y, embeddings, config, len(classes))
    features = _fit_features(texts, embeddings, config)
    svm = _svm(config).fit(features.matrix, y)
    if list(svm.classes_) != list(range(len(classes))):
        raise ClassifierError("the SVM did not see every label")
    coef = np.asarray(svm.coef_, dtype=np.float64)  # (labels, features)
    blocks, offset = {}, 0
    for name, vec in features.vectorisers.items():
        size = len(vec.vocabulary_)
        blocks[name] = _SparseBlock(
            analyzer=vec.build_analyzer(),
            vocabulary={str(k): int(v) for k, v in vec.vocabulary_.items()},
            idf=np.asarray(vec.idf_, dtype=np.float64),
            weights=np.ascontiguousarray(coef[:, offset : offset + size].T),
        )
        offset += size
    embedding_weights = None
    if embeddings is not None:
        embedding_weights = np.ascontiguousarray(
            coef[:, offset:].T * config.embedding_weight, dtype=np.float32
        )
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": "linear SVM over TF-IDF word + char n-grams"
        + (" + all-MiniLM-L6-v2 embedding" if embeddings is not None else "")
        + ", softmax with fitted temperature",
        "embedder": "all-MiniLM-L6-v2" if embeddings is not None else None,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "training_data": {"rows": len(texts), "hash": training_data_hash(texts, labels)},
        "feature_config": config.as_dict(),
        "metrics": {},
    }
    classifier = IntentClassifier(
        labels=classes,
        config=config,
        blocks=blocks,
        embedding_weights=embedding_weights,
        bias=np.asarray(svm.intercept_, dtype=np.float64),
        temperature=temperature,
        metadata=metadata,
    )
    if eval_set is not None:
        report = evaluate(classifier, *eval_set)
        classifier.metadata["metrics"] = {
            "macro_f1": round(report.macro_f1, 4),
            "accuracy": round(report.accuracy, 4),
            "eval_rows": report.rows,
            "eval_hash": training_data_hash(*eval_set),
        }
    return classifier


def _indices(labels: Sequence[str], classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[x] for x in labels])


def _calibrate(
    texts: list[str], y: np.ndarray, embeddings: np.ndarray | None, config: FeatureConfig, n_classes: int
) -> float:
    """Fit the softmax temperature on a held-out share, with features fitted on the rest only."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y, minlength=n_classes)
    stratify = y if counts.min() >= 2 else None
    idx_fit, idx_held = train_test_split(
        np.arange(len(texts)), test_size=config.calibration_share, random_state=config.seed, stratify=stratify
    )
    fit_texts = [texts[i] for i in idx_fit]
    held_texts = [texts[i] for i in idx_held]
    fit_emb = None if embeddings is None else embeddings[idx_fit]
    held_emb = None if embeddings is None else embeddings[idx_held]
    features = _fit_features(fit_texts, fit_emb, config)
    if len(set(y[idx_fit].tolist())) < 2:
        return 1.0
    svm = _svm(config).fit(features.matrix, y[idx_fit])
    scores = np.full((len(idx_held), n_classes), -1e3)
    scores[:, svm.classes_] = svm.decision_function(
        _transform(features, held_texts, held_emb, config.embedding_weight)
    ).reshape(len(idx_held), -1)
    return _fit_temperature(scores, y[idx_held])


# -------------------------------------------------------------------------------------------
# data and the default classifier


def read_labelled_csv(path: Path) -> tuple[list[str], list[str]]:
    """``text,label`` (or BANKING77's ``text,category``) rows of a CSV file."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            label_column = "label" if "label" in columns else "category" if "category" in columns else None
            if "text" not in columns or label_column is None:
                raise ClassifierError(
                    f"{path} needs columns text,label (or text,category); "
                    f"it has {','.join(columns) or 'none'}"
                )
            texts, labels = [], []
            for line, row in enumerate(reader, start=2):
                text, label = row.get("text"), row.get(label_column)
                if text is None or not label:
                    raise ClassifierError(f"{path}:{line}: row needs a text and a {label_column}")
                texts.append(text)
                labels.append(label.strip())
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ClassifierError(f"cannot read {path}: {exc}") from exc
    if not texts:
        raise ClassifierError(f"{path} has no rows")
    return texts, labels


def default_cache_key(train_csv: Path, config: FeatureConfig) -> str:
    """Changes with the data, the features, this code and the scikit-learn that trains."""
    from importlib.metadata import version

    digest = hashlib.sha256(Path(train_csv).read_bytes())
    for module in ("classifier.py", "embedder.py"):
        digest.update((Path(__file__).parent / module).read_bytes())
    key = {"config": config.as_dict(), "format": FORMAT_VERSION, "sklearn": version("scikit-learn")}
    digest.update(json.dumps(key, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def default_classifier_dir(config: FeatureConfig | None = None) -> Path:
    """The classifier trained on the shipped BANKING77 train split, trained once and cached.

    Concurrent first uses each train into a private temporary directory and rename it into
    place; the first rename wins and the others discard their copy.
    """
    from phoenix_operator.data import banking77

    config = config or FeatureConfig()
    train_csv, test_csv = banking77("train"), banking77("test")
    parent = cache_root() / "classifier"
    target = parent / default_cache_key(train_csv, config)
    if (target / METADATA_FILE).is_file():
        return target
    parent.mkdir(parents=True, exist_ok=True)
    texts, labels = read_labelled_csv(train_csv)
    classifier = train_classifier(texts, labels, config, eval_set=read_labelled_csv(test_csv))
    classifier.metadata["training_data"]["source"] = "BANKING77 train split (shipped)"
    classifier.metadata["metrics"]["eval_source"] = "BANKING77 test split (shipped)"
    scratch = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
    try:
        classifier.save(scratch)
        try:
            scratch.rename(target)
        except OSError:
            if not (target / METADATA_FILE).is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
