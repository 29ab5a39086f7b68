"""``phoenix kb ingest|rollback|status`` and ``phoenix eval``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

import click
import yaml

from phoenix_operator.api.models import PhoenixDeployment, PhoenixDeploymentSpec
from phoenix_operator.quality import lifecycle

if TYPE_CHECKING:
    from pymilvus import MilvusClient

    from phoenix_operator.api.models import CollectionSpec
    from phoenix_operator.quality.documents import SourceFormat
    from phoenix_operator.quality.evaluate import LabelledSet
    from phoenix_operator.quality.gate import RefreshVerdict
    from phoenix_operator.quality.kb import IngestResult, TextEmbedder

#: Seconds to wait between a verified build and the alias switch: a fault-injection seam so a test
#: (or a drill) can kill an ingest at its most delicate point. Unset in normal use.
PAUSE_ENV = "PHOENIX_KB_PAUSE_BEFORE_PROMOTE_S"

DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")


# --------------------------------------------------------------------------------------------
# shared options


def _load_deployment(spec_file: str, name: str | None) -> PhoenixDeployment:
    from phoenix_operator.api.documents import load_documents, parse_phoenix_deployments

    try:
        docs = load_documents(spec_file)
    except OSError as exc:
        raise click.ClickException(f"cannot read {spec_file}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{spec_file} is not YAML: {exc}") from None
    deployments = parse_phoenix_deployments(docs)
    if not deployments and len(docs) == 1 and "model" in docs[0]:
        # A bare spec, as the operator mounts it into its jobs (the gateway's spec file).
        try:
            spec = PhoenixDeploymentSpec.model_validate(docs[0])
        except ValueError as exc:
            raise click.ClickException(f"{spec_file} is not a valid PhoenixDeployment spec:\n{exc}") from None
        return PhoenixDeployment.model_validate(
            {"apiVersion": "", "kind": "", "metadata": {"name": name or "deployment"}, "spec": spec}
        )
    if name is not None:
        deployments = [d for d in deployments if d.metadata.get("name") == name]
    if not deployments:
        raise click.ClickException(f"no PhoenixDeployment{f' named {name}' if name else ''} in {spec_file}")
    if len(deployments) > 1:
        names = ", ".join(str(d.metadata.get("name")) for d in deployments)
        raise click.ClickException(
            f"{spec_file} holds several PhoenixDeployments ({names}); pick one with --name"
        )
    return deployments[0]


def _retrieval_spec(deployment: PhoenixDeployment, spec_file: str) -> Any:
    if deployment.spec.retrieval is None:
        raise click.ClickException(f"{spec_file}: the PhoenixDeployment has no spec.retrieval")
    return deployment.spec.retrieval


def _milvus_client(
    deployment: PhoenixDeployment, spec_file: str, uri: str | None, token_env: str | None
) -> Any:
    from phoenix_operator.quality.kb import KbError, connect

    retrieval = _retrieval_spec(deployment, spec_file)
    external = retrieval.milvus.external
    uri = uri or (external.uri if external is not None else None)
    if not uri:
        raise click.ClickException("pass --milvus-uri (the spec names no external Milvus)")
    token = None
    if token_env:
        token = os.environ.get(token_env, "").strip()
        if not token:
            raise click.ClickException(f"--token-env {token_env}: the variable is unset or empty")
    db_name = external.db_name if external is not None else "default"
    try:
        return connect(uri, token, db_name)
    except KbError as exc:
        raise click.ClickException(str(exc)) from None


@contextlib.contextmanager
def _milvus_errors(doing: str) -> Iterator[None]:
    """Milvus and lifecycle errors as one clear line (exit 1), never a traceback."""
    from pymilvus.exceptions import MilvusException

    from phoenix_operator.quality.kb import KbError

    try:
        yield
    except (KbError, lifecycle.RollbackError) as exc:
        raise click.ClickException(f"{doing}: {exc}") from None
    except MilvusException as exc:
        raise click.ClickException(f"{doing}: Milvus error: {exc.message} (code {exc.code})") from None


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM (a Job deleted, a node drained) unwinds like an error, so the partial version is dropped."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)


milvus_uri_option = click.option(
    "--milvus-uri", default=None, help="Milvus URI (default: the spec's external URI)."
)
spec_option = click.option(
    "--spec", "spec_file", required=True, help="PhoenixDeployment YAML (its spec.retrieval.collection)."
)
name_option = click.option(
    "--name", default=None, help="PhoenixDeployment to use when the file holds several."
)
token_option = click.option(
    "--token-env", default=None, help="Environment variable holding the Milvus token."
)


# --------------------------------------------------------------------------------------------
# kb


@click.group("kb")
def kb() -> None:
    """Knowledge base: versioned collections behind the alias the gateway searches."""


@kb.command("ingest")
@click.option(
    "--source", required=True, help="JSONL or CSV of documents (id, text, metadata): a path or URL."
)
@milvus_uri_option
@spec_option
@name_option
@click.option("--retention", default=lifecycle.DEFAULT_RETENTION, show_default=True, type=click.IntRange(1))
@token_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None, help="Source format.")
@click.option("--max-bytes", default=256 * 1024 * 1024, show_default=True, type=click.IntRange(1))
@click.option("--chunk-words", default=160, show_default=True, type=click.IntRange(1))
@click.option("--chunk-overlap", default=32, show_default=True, type=click.IntRange(0))
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1), help="Embedder threads.")
@click.option(
    "--eval",
    "eval_data",
    default=None,
    help="Labelled CSV text,label,doc_id: gate the alias switch on retrieval hit@k (k = gateway.topK).",
)
@click.option(
    "--min-hit-at-k",
    default=None,
    type=click.FloatRange(0, 1),
    help="With --eval: refuse a new version whose hit@k is below this.",
)
@click.option(
    "--max-hit-at-k-drop",
    default=None,
    type=click.FloatRange(0, 1),
    help="With --eval: refuse a new version more than this below the current one's hit@k [default: 0.02].",
)
@click.option(
    "--termination-log",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --eval: write the gate's figures as JSON here (default /dev/termination-log if writable).",
)
def ingest(
    source: str,
    milvus_uri: str | None,
    spec_file: str,
    name: str | None,
    retention: int,
    token_env: str | None,
    fmt: str | None,
    max_bytes: int,
    chunk_words: int,
    chunk_overlap: int,
    threads: int,
    eval_data: str | None,
    min_hit_at_k: float | None,
    max_hit_at_k_drop: float | None,
    termination_log: Path | None,
) -> None:
    """Build a new version of the knowledge base and switch the alias to it once it is verified.

    With --eval the switch also needs the new version's retrieval hit@k to pass the quality gate;
    a rejected version is dropped, the alias stays, and the exit status is 3.
    """
    from phoenix_operator.quality import evaluate as ev
    from phoenix_operator.quality import kb as kbmod
    from phoenix_operator.quality.documents import (
        ChunkSettings,
        SourceError,
        chunk_documents,
        content_hash,
        parse_documents,
    )
    from phoenix_operator.quality.gate import DEFAULT_MAX_HIT_AT_K_DROP, EXIT_REJECTED

    _log_to_stderr()
    deployment = _load_deployment(spec_file, name)
    collection = _retrieval_spec(deployment, spec_file).collection
    try:
        settings = ChunkSettings(chunk_words, chunk_overlap)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--chunk-overlap") from None
    try:
        text, declared = kbmod.read_source(source, max_bytes)
        override = cast("SourceFormat | None", fmt)
        docs = parse_documents(text, kbmod.source_format(source, declared, override), source)
    except SourceError as exc:
        raise click.ClickException(str(exc)) from None
    chunks = chunk_documents(docs, settings)
    pause = _pause_hook()
    labelled: ev.LabelledSet | None = None
    if eval_data is None:
        for flag, value in (("--min-hit-at-k", min_hit_at_k), ("--max-hit-at-k-drop", max_hit_at_k_drop)):
            if value is not None:
                raise click.UsageError(f"{flag} needs --eval")
    else:
        try:
            labelled = ev.parse_labelled(kbmod.read_source(eval_data)[0], eval_data)
        except (SourceError, ev.DataError) as exc:
            raise click.ClickException(str(exc)) from None
        if not labelled.has_doc_ids:
            raise click.ClickException(f"{eval_data}: the refresh gate needs a doc_id column with values")
    max_drop = DEFAULT_MAX_HIT_AT_K_DROP if max_hit_at_k_drop is None else max_hit_at_k_drop
    top_k = deployment.spec.gateway.top_k

    from phoenix_operator.ml.embedder import Embedder

    client = _milvus_client(deployment, spec_file, milvus_uri, token_env)
    try:
        embedder = Embedder.load(threads=threads)
        build = {
            "embedder": embedder.name,
            "dimension": collection.dimension,
            "metric": str(collection.metric),
            "index": [str(collection.index.type), dict(collection.index.params)],
        }
        sha = content_hash(docs, settings, build)
        click.echo(f"{len(docs)} documents, {len(chunks)} chunks from {source} (sha256 {sha[:12]})", err=True)
        gate = _RefreshGate(client, collection, embedder, labelled, top_k, min_hit_at_k, max_drop)
        with _milvus_errors("ingest failed"), _sigterm_as_exit():
            result = kbmod.ingest(
                client,
                collection,
                chunks,
                embedder,
                sha,
                source_label=source,
                documents=len(docs),
                retention=retention,
                before_promote=pause,
                judge=gate.judge if labelled is not None else None,
            )
            message = gate.unchanged_message(result) if labelled is not None and result.unchanged else None
    finally:
        client.close()
    for dropped in result.cleaned:
        click.echo(f"dropped {dropped} (left unfinished by an earlier run)")
    verdict = result.verdict
    figures = f"; quality gate (k={top_k}): {verdict.message}" if verdict is not None else ""
    if result.unchanged:
        click.echo(f"{collection.name} -> {result.version} already serves this source: no new version")
    elif result.promoted:
        click.echo(
            f"{collection.name} -> {result.version} ({result.rows} chunks)"
            + (f", was {result.previous}" if result.previous else "")
            + figures
        )
    else:
        stays = f"stays on {result.previous}" if result.previous else "is not created"
        click.echo(f"refresh rejected: {collection.name} {stays}, {result.version} dropped{figures}")
    for dropped in result.retired:
        click.echo(f"dropped {dropped} (beyond --retention {retention})")
    if labelled is not None:
        if message is None and verdict is not None:
            message = gate.message(result, verdict)
        _write_termination_log(termination_log, message)
    if not result.promoted and not result.unchanged:
        sys.exit(EXIT_REJECTED)


class _RefreshGate:
    """Measures hit@k of the new version and of the one the alias serves, searching each version by
    name (never the alias), and asks the pure ``refresh_gate``."""

    def __init__(
        self,
        client: MilvusClient,
        collection: CollectionSpec,
        embedder: TextEmbedder,
        labelled: LabelledSet | None,
        k: int,
        min_hit_at_k: float | None,
        max_drop: float,
    ) -> None:
        self.client, self.collection, self.embedder, self.labelled = client, collection, embedder, labelled
        self.k, self.min_hit_at_k, self.max_drop = k, min_hit_at_k, max_drop
        self.queries = 0

    def _measure(self, names: list[str]) -> list[float]:
        from phoenix_operator.quality.evaluate import retrieval_figures_of

        assert self.labelled is not None, "the gate measures only with --eval"
        figures = retrieval_figures_of(
            self.client, names, self.collection, self.embedder, self.labelled, self.k
        )
        self.queries = figures[0].queries
        return [f.hit_at_k for f in figures]

    def judge(self, version: str, current: str | None) -> RefreshVerdict:
        from phoenix_operator.quality.gate import refresh_gate

        measured = self._measure([version] if current is None else [version, current])
        now = measured[1] if current is not None else None
        verdict = refresh_gate(measured[0], now, self.min_hit_at_k, self.max_drop)
        click.echo(f"quality gate on {version} (k={self.k}): {verdict.message}", err=True)
        return verdict

    def message(self, result: IngestResult, verdict: RefreshVerdict) -> str:
        from phoenix_operator.quality.gate import refresh_message

        return refresh_message(
            verdict,
            promoted=result.promoted,
            k=self.k,
            queries=self.queries,
            version=result.version,
            previous=result.previous,
        )

    def unchanged_message(self, result: IngestResult) -> str:
        """The live version's figure, so even a run with nothing new reports a fresh hit@k."""
        from phoenix_operator.quality.gate import UNCHANGED, RefreshVerdict, refresh_message

        live = self._measure([result.version])[0]
        verdict = RefreshVerdict(False, UNCHANGED, "no new version", live, live)
        return refresh_message(
            verdict,
            promoted=False,
            k=self.k,
            queries=self.queries,
            version=result.version,
            previous=result.version,
            unchanged=True,
        )


def _write_termination_log(path: Path | None, message: str | None) -> None:
    target = path or _default_termination_log()
    if target is None or message is None:
        return
    try:
        target.write_text(message)
    except OSError as exc:
        raise click.ClickException(f"cannot write the termination message to {target}: {exc}") from None


def _pause_hook() -> Any:
    raw = os.environ.get(PAUSE_ENV)
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise click.ClickException(f"{PAUSE_ENV}={raw!r} is not a number of seconds") from None

    def pause(version: str) -> None:
        click.echo(f"pausing {seconds:g}s before promoting {version} ({PAUSE_ENV})", err=True)
        sys.stderr.flush()
        time.sleep(seconds)

    return pause


@kb.command("rollback")
@milvus_uri_option
@spec_option
@name_option
@token_option
@click.option(
    "--to-version", "to", type=click.IntRange(1), default=None, help="Version N (default: the previous)."
)
def rollback(
    milvus_uri: str | None, spec_file: str, name: str | None, token_env: str | None, to: int | None
) -> None:
    """Point the alias back at the previous version (kept by --retention)."""
    from phoenix_operator.quality import kb as kbmod

    _log_to_stderr()
    deployment = _load_deployment(spec_file, name)
    alias = _retrieval_spec(deployment, spec_file).collection.name
    client = _milvus_client(deployment, spec_file, milvus_uri, token_env)
    try:
        with _milvus_errors("rollback failed"):
            before, after = kbmod.rollback(client, alias, to)
    finally:
        client.close()
    click.echo(f"{alias} -> {after} (was {before})")


@kb.command("status")
@milvus_uri_option
@spec_option
@name_option
@token_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(
    milvus_uri: str | None, spec_file: str, name: str | None, token_env: str | None, as_json: bool
) -> None:
    """Versions, which one the alias serves, row counts."""
    from phoenix_operator.quality import kb as kbmod

    deployment = _load_deployment(spec_file, name)
    alias = _retrieval_spec(deployment, spec_file).collection.name
    client = _milvus_client(deployment, spec_file, milvus_uri, token_env)
    try:
        with _milvus_errors("status failed"):
            state = kbmod.status(client, alias)
    finally:
        client.close()
    if as_json:
        payload = {
            "alias": state.alias,
            "target": state.target,
            "plain_collection": state.plain,
            "plain_collection_rows": state.plain_rows,
            "versions": [
                {
                    "name": v.name,
                    "version": v.number,
                    "state": v.state,
                    "rows": v.rows,
                    "source_sha256": v.source_sha256,
                    "created": v.created,
                    "live": v.name == state.target,
                }
                for v in state.versions
            ],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    if state.plain:
        rows = "rows unknown" if state.plain_rows is None else f"{state.plain_rows} rows"
        click.echo(f"{alias} is a plain collection ({rows}), not an alias yet")
    else:
        click.echo(f"{alias} -> {state.target or '(no alias yet)'}")
    if not state.versions:
        click.echo("no versions")
        return
    click.echo(f"  {'version':<28}{'state':<10}{'rows':>8}  {'sha256':<14}created")
    for v in state.versions:
        mark = "*" if v.name == state.target else " "
        rows = "?" if v.rows is None else str(v.rows)
        sha = (v.source_sha256 or "?")[:12]
        click.echo(f"{mark} {v.name:<28}{v.state:<10}{rows:>8}  {sha:<14}{v.created or '?'}")


# --------------------------------------------------------------------------------------------
# eval


def _default_termination_log() -> Path | None:
    path = DEFAULT_TERMINATION_LOG
    return path if path.exists() and os.access(path, os.W_OK) else None


@click.command("eval")
@click.option("--data", required=True, help="Labelled CSV: text,label (or text,category), optional doc_id.")
@click.option(
    "--classifier",
    "classifier_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Classifier directory (default: the one trained on BANKING77's training split).",
)
@click.option(
    "--spec", "spec_file", default=None, help="PhoenixDeployment YAML: routes (urgent), topK, collection."
)
@name_option
@milvus_uri_option
@token_option
@click.option(
    "--json",
    "json_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the full report (per-class F1 too) here.",
)
@click.option(
    "--termination-log",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the headline figures as compact JSON here (default /dev/termination-log if writable).",
)
@click.option(
    "--candidate",
    default=None,
    help="Name of the retraining candidate being measured, reported beside its figures.",
)
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1), help="Embedder threads.")
def evaluate(
    data: str,
    classifier_dir: Path | None,
    spec_file: str | None,
    name: str | None,
    milvus_uri: str | None,
    token_env: str | None,
    json_path: Path | None,
    termination_log: Path | None,
    candidate: str | None,
    threads: int,
) -> None:
    """Offline figures: macro-F1, accuracy, urgent recall/precision, per-class F1, retrieval hit@k."""
    from phoenix_operator.quality import evaluate as ev
    from phoenix_operator.quality.documents import SourceError
    from phoenix_operator.quality.kb import read_source
    from phoenix_operator.quality.metrics import (
        EvalReport,
        classification_figures,
        render_table,
        report_dict,
        termination_message,
    )

    try:
        labelled = ev.parse_labelled(read_source(data)[0], data)
    except (SourceError, ev.DataError) as exc:
        raise click.ClickException(str(exc)) from None
    deployment = _load_deployment(spec_file, name) if spec_file else None
    spec: PhoenixDeploymentSpec | None = deployment.spec if deployment else None
    if milvus_uri and (deployment is None or spec is None or spec.retrieval is None):
        raise click.ClickException("--milvus-uri needs --spec with spec.retrieval (collection and topK)")

    from phoenix_operator.ml.classifier import IntentClassifier, default_classifier_dir
    from phoenix_operator.ml.embedder import Embedder

    directory = classifier_dir or default_classifier_dir()
    try:
        classifier = IntentClassifier.load(directory)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot load the classifier from {directory}: {exc}") from None
    predictions = classifier.predict_many(labelled.texts)
    report = EvalReport(classification_figures(labelled.labels, [p.intent for p in predictions]))
    if spec is not None:
        report = EvalReport(report.classification, ev.urgent_from_routes(spec, labelled.labels, predictions))
    if milvus_uri and deployment is not None and spec is not None and spec.retrieval is not None:
        if not labelled.has_doc_ids:
            raise click.ClickException(f"{data}: retrieval hit@k needs a doc_id column with values")
        client = _milvus_client(deployment, spec_file or "", milvus_uri, token_env)
        try:
            with _milvus_errors("retrieval evaluation failed"):
                figures = ev.retrieval_figures(
                    client,
                    spec.retrieval.collection,
                    Embedder.load(threads=threads),
                    labelled,
                    spec.gateway.top_k,
                )
        finally:
            client.close()
        report = EvalReport(report.classification, report.urgent, figures)

    click.echo(render_table(report))
    if json_path is not None:
        full = report_dict(report)
        full["classifier"] = str(directory)
        full["data"] = data
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(full, indent=2) + "\n")
        click.echo(f"wrote {json_path}", err=True)
    target = termination_log or _default_termination_log()
    if target is not None:
        try:
            target.write_text(termination_message(report, {"candidate": candidate} if candidate else None))
        except OSError as exc:
            raise click.ClickException(f"cannot write the termination message to {target}: {exc}") from None
