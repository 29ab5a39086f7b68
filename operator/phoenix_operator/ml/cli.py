"""``phoenix classifier``: train and query the intent classifier."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

from phoenix_operator.api.models import PhoenixDeploymentSpec
from phoenix_operator.ml.classifier import METADATA_FILE, ClassifierError

#: Priority classes and routes of examples/production.yaml, shipped in code so that
#: ``phoenix classifier predict`` and ``phoenix bench classifier`` work from an installed wheel
#: (no checkout, no examples/); tests/test_ml_routing.py keeps the two in step.
REFERENCE_SPEC: dict[str, Any] = {
    "model": {
        "name": "llama-chat",
        "backend": "vllm",
        "repository": {"uri": "s3://models/llama-3-8b-instruct"},
    },
    "priority": {
        "defaultClass": "standard",
        "classes": [
            {"name": "urgent", "level": 1, "ttftTargetSeconds": 1.5},
            {"name": "standard", "level": 2, "ttftTargetSeconds": 3},
            {
                "name": "bulk",
                "level": 3,
                "ttftTargetSeconds": 10,
                "queuePolicy": {
                    "timeoutMicroseconds": 30000000,
                    "timeoutAction": "REJECT",
                    "maxQueueSize": 2000,
                },
            },
        ],
    },
    "gateway": {
        "routes": [
            {
                "priorityClass": "urgent",
                "minConfidence": 0.2,
                "intents": [
                    "lost_or_stolen_card",
                    "compromised_card",
                    "card_swallowed",
                    "lost_or_stolen_phone",
                    "cash_withdrawal_not_recognised",
                    "card_payment_not_recognised",
                    "direct_debit_payment_not_recognised",
                    "transaction_charged_twice",
                    "wrong_amount_of_cash_received",
                ],
            }
        ]
    },
}


def reference_spec() -> PhoenixDeploymentSpec:
    return PhoenixDeploymentSpec.model_validate(REFERENCE_SPEC)


def load_spec(path: str | None) -> PhoenixDeploymentSpec:
    """The spec of the one PhoenixDeployment in ``path``; the reference routes without a path."""
    if path is None:
        return reference_spec()
    import yaml

    from phoenix_operator.api.documents import load_documents, parse_phoenix_deployments

    try:
        deployments = parse_phoenix_deployments(load_documents(path))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from exc
    if len(deployments) != 1:
        raise click.ClickException(
            f"{path} must hold exactly one PhoenixDeployment, it has {len(deployments)}"
        )
    return deployments[0].spec


def _default_train_csv() -> Path:
    from phoenix_operator.data import banking77

    return banking77("train")


@click.group("classifier")
def classifier() -> None:
    """Train and query the intent classifier that flags urgent requests."""


@classifier.command("train")
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV with columns text,label (or text,category). Default: BANKING77's shipped train split.",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Directory to write."
)
@click.option(
    "--eval",
    "eval_csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Held-out CSV (same columns): print and record macro-F1 and accuracy.",
)
@click.option("--force", is_flag=True, help="Replace an existing classifier directory at --out.")
def train(data: Path | None, out: Path, eval_csv: Path | None, force: bool) -> None:
    """Train a classifier and write its directory (metadata.json + arrays.npz, no pickle)."""
    from phoenix_operator.ml.classifier import read_labelled_csv, train_classifier

    if out.exists() and any(out.iterdir()):
        if not (out / METADATA_FILE).is_file():
            raise click.ClickException(
                f"{out} exists and is not a classifier directory; choose another --out"
            )
        if not force:
            raise click.ClickException(f"{out} already holds a classifier; pass --force to replace it")
    data = data or _default_train_csv()
    try:
        texts, labels = read_labelled_csv(data)
        eval_set = read_labelled_csv(eval_csv) if eval_csv else None
        click.echo(f"training on {len(texts)} rows, {len(set(labels))} labels from {data}", err=True)
        model = train_classifier(texts, labels, eval_set=eval_set)
    except ClassifierError as exc:
        raise click.ClickException(str(exc)) from exc
    model.metadata["training_data"]["source"] = str(data)
    # Write beside the target, then swap, so a failed write never leaves a half classifier at --out.
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save(scratch)
        if out.exists():
            shutil.rmtree(out)
        scratch.rename(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    metrics = model.metadata.get("metrics") or {}
    if metrics:
        click.echo(
            f"held-out {metrics['eval_rows']} rows: macro-F1 {metrics['macro_f1']:.4f}, "
            f"accuracy {metrics['accuracy']:.4f}"
        )
    click.echo(f"wrote {out}")


@classifier.command("predict")
@click.option(
    "--classifier",
    "directory",
    type=click.Path(path_type=Path),
    default=None,
    help="Classifier directory. Default: the BANKING77 classifier (trained and cached on first use).",
)
@click.option(
    "--spec",
    "spec_file",
    default=None,
    help="PhoenixDeployment YAML whose routes pick the class. Default: examples/production.yaml's routes.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per text, as a list.")
@click.argument("texts", nargs=-1, required=True)
def predict(directory: Path | None, spec_file: str | None, as_json: bool, texts: tuple[str, ...]) -> None:
    """Print the intent, its probability and the priority class of each TEXT."""
    from phoenix_operator.ml.classifier import IntentClassifier, default_classifier_dir
    from phoenix_operator.ml.routing import choose_class

    spec = load_spec(spec_file)
    try:
        model = IntentClassifier.load(directory or default_classifier_dir())
    except ClassifierError as exc:
        raise click.ClickException(str(exc)) from exc
    rows = []
    for text, prediction in zip(texts, model.predict_many(list(texts)), strict=True):
        choice = choose_class(spec, prediction)
        rows.append(
            {
                "text": text,
                "intent": prediction.intent,
                "confidence": round(prediction.confidence, 4),
                "priority_class": choice.priority_class,
                "level": choice.level,
                "reason": choice.reason,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for row in rows:
        click.echo(f"{row['priority_class']:<10} {row['intent']} ({row['confidence']:.2f})  {row['text']}")
