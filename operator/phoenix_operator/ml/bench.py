"""``phoenix bench classifier``: accuracy, urgent routing and per-query latency on BANKING77's test split."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from phoenix_operator.api.models import PhoenixDeploymentSpec
from phoenix_operator.ml.classifier import ClassifierError, IntentClassifier, Prediction
from phoenix_operator.ml.cli import load_spec
from phoenix_operator.ml.routing import choose_class
from phoenix_operator.stats import percentile

WARMUP_QUERIES = 20


def urgent_intents(spec: PhoenixDeploymentSpec, labels: list[str]) -> tuple[str, set[str]]:
    """The most urgent class and the labels that ``choose_class`` sends there when certain of them."""
    if spec.priority is None:
        raise click.ClickException("the spec defines no priority classes, so nothing is urgent")
    most_urgent = min(spec.priority.classes, key=lambda c: c.level).name
    urgent = {
        label
        for label in labels
        if choose_class(spec, Prediction(label, 1.0, {label: 1.0})).priority_class == most_urgent
    }
    if not urgent:
        raise click.ClickException(f"no classifier intent routes to {most_urgent!r} in this spec")
    return most_urgent, urgent


def _ms(samples: list[float], q: float) -> float:
    return round(percentile(np.array(samples) * 1e3, q), 3)


def run_classifier_bench(
    model: IntentClassifier,
    spec: PhoenixDeploymentSpec,
    texts: list[str],
    labels: list[str],
    latency_queries: int = 0,
) -> dict[str, Any]:
    """Figures of ``model`` on a labelled set; latency one query at a time on one thread."""
    from sklearn.metrics import accuracy_score, f1_score
    from threadpoolctl import threadpool_limits

    from phoenix_operator.ml.embedder import shared_embedder

    most_urgent, urgent = urgent_intents(spec, model.labels)
    embedder = shared_embedder(threads=1) if model.uses_embedding else None
    with threadpool_limits(limits=1):
        predictions = model.predict_many(texts)
        predicted = [p.intent for p in predictions]
        routed = np.array([choose_class(spec, p).priority_class == most_urgent for p in predictions])
        truth = np.array([label in urgent for label in labels])

        count = len(texts) if latency_queries <= 0 else min(latency_queries, len(texts))
        picks = np.linspace(0, len(texts) - 1, count).astype(int)
        for text in texts[:WARMUP_QUERIES]:
            model.predict(text)
        embed_s, classify_s, total_s = [], [], []
        for i in picks:
            start = time.perf_counter()
            vector = embedder.embed([texts[i]])[0] if embedder is not None else None
            embedded = time.perf_counter()
            model.predict(texts[i], embedding=vector)
            done = time.perf_counter()
            embed_s.append(embedded - start)
            classify_s.append(done - embedded)
            total_s.append(done - start)

    hits = int((routed & truth).sum())
    return {
        "rows": len(texts),
        "macro_f1": round(float(f1_score(labels, predicted, average="macro")), 4),
        "accuracy": round(float(accuracy_score(labels, predicted)), 4),
        "urgent_class": most_urgent,
        "urgent_intents": sorted(urgent),
        "urgent_rows": int(truth.sum()),
        "urgent_recall": round(hits / max(1, int(truth.sum())), 4),
        "urgent_precision": round(hits / max(1, int(routed.sum())), 4),
        "latency_queries": count,
        "uses_embedding": model.uses_embedding,
        "p50_ms": _ms(total_s, 50),
        "p99_ms": _ms(total_s, 99),
        "p50_ms_without_embedding": _ms(classify_s, 50),
        "p99_ms_without_embedding": _ms(classify_s, 99),
        "embed_p50_ms": _ms(embed_s, 50),
        "embed_p99_ms": _ms(embed_s, 99),
    }


@click.command("classifier")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--spec",
    "spec_file",
    default=None,
    help="PhoenixDeployment YAML whose routes define urgent. Default: examples/production.yaml's routes.",
)
@click.option("--classifier", "directory", type=click.Path(path_type=Path), default=None)
@click.option(
    "--latency-queries", type=int, default=0, show_default=True, help="Queries timed one by one; 0 = all."
)
@click.option(
    "--rows", type=int, default=0, show_default=True, help="Evenly spread test rows to score; 0 = all 3,080."
)
def bench_classifier(
    json_path: Path | None, spec_file: str | None, directory: Path | None, latency_queries: int, rows: int
) -> None:
    """Benchmark the intent classifier on BANKING77's test split (one CPU thread)."""
    from phoenix_operator.data import banking77
    from phoenix_operator.ml.classifier import default_classifier_dir, read_labelled_csv

    spec = load_spec(spec_file)
    try:
        model = IntentClassifier.load(directory or default_classifier_dir())
    except ClassifierError as exc:
        raise click.ClickException(str(exc)) from exc
    texts, labels = read_labelled_csv(banking77("test"))
    if 0 < rows < len(texts):
        picks = np.linspace(0, len(texts) - 1, rows).astype(int)
        texts, labels = [texts[i] for i in picks], [labels[i] for i in picks]
    report = run_classifier_bench(model, spec, texts, labels, latency_queries)
    for key in (
        "macro_f1",
        "accuracy",
        "urgent_recall",
        "urgent_precision",
        "p50_ms",
        "p99_ms",
        "p50_ms_without_embedding",
        "p99_ms_without_embedding",
    ):
        click.echo(f"{key:<26} {report[key]}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"wrote {json_path}")
