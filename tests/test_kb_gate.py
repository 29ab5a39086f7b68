"""The knowledge-base refresh gate: ``phoenix kb ingest --eval`` moves the alias only when the new
version's retrieval hit@k passes, measured against real Milvus Lite with the real MiniLM embedder.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from pymilvus import MilvusClient

from phoenix_operator.data import banking77
from phoenix_operator.local.milvus import LocalMilvus
from phoenix_operator.ml.embedder import Embedder
from phoenix_operator.quality import kb as kbmod
from phoenix_operator.quality import lifecycle
from phoenix_operator.quality.cli import kb
from phoenix_operator.quality.documents import Document
from phoenix_operator.quality.gate import (
    BELOW_MIN,
    EXIT_REJECTED,
    PASSED,
    RefreshVerdict,
    refresh_gate,
    refresh_message,
)
from test_kb import intent_documents, search_alias, write_jsonl, write_spec

# --------------------------------------------------------------------------------------------
# the decision (pure)


@pytest.mark.parametrize(
    ("new", "current", "floor", "drop", "promote", "reason"),
    [
        (0.90, None, None, 0.02, True, PASSED),  # first version, no floor
        (0.90, None, 0.95, 0.02, False, BELOW_MIN),  # first version under the floor
        (0.95, None, 0.95, 0.02, True, PASSED),  # exactly at the floor
        (0.90, 0.90, None, 0.02, True, PASSED),  # same as now
        (0.95, 0.90, None, 0.02, True, PASSED),  # better
        (0.88, 0.90, None, 0.02, True, PASSED),  # exactly the allowed drop
        (0.879, 0.90, None, 0.02, False, "Regressed"),  # just past it
        (0.10, 0.90, None, 0.5, False, "Regressed"),
        (0.90, 0.90, 0.95, 0.02, False, BELOW_MIN),  # floor first, even when not worse
        (0.0, 0.0, None, 0.0, True, PASSED),
        (1.0, 1.0, 1.0, 0.0, True, PASSED),
    ],
)
def test_refresh_gate_table(
    new: float, current: float | None, floor: float | None, drop: float, promote: bool, reason: str
) -> None:
    verdict = refresh_gate(new, current, floor, drop)
    assert (verdict.promote, verdict.reason) == (promote, reason)
    assert (verdict.hit_at_k, verdict.current_hit_at_k) == (new, current)
    assert f"{new:.4f}" in verdict.message
    assert ("none" if current is None else f"{current:.4f}") in verdict.message


@pytest.mark.parametrize(
    ("new", "current", "floor", "drop"),
    [(1.2, None, None, 0.02), (0.5, -0.1, None, 0.02), (0.5, 0.5, float("nan"), 0.02), (0.5, 0.5, None, 2.0)],
)
def test_refresh_gate_refuses_figures_out_of_range(
    new: float, current: float | None, floor: float | None, drop: float
) -> None:
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        refresh_gate(new, current, floor, drop)


def test_refresh_message_is_one_compact_json_line() -> None:
    verdict = RefreshVerdict(False, "Regressed", "x", 0.312345, 0.96104)
    text = refresh_message(verdict, promoted=False, k=4, queries=40, version="kb_v3", previous="kb_v2")
    assert "\n" not in text and " " not in text
    assert json.loads(text) == {
        "hit_at_k": 0.3123,
        "current_hit_at_k": 0.961,
        "promoted": False,
        "reason": "Regressed",
        "k": 4,
        "queries": 40,
        "version": "kb_v3",
        "previous": "kb_v2",
    }


# --------------------------------------------------------------------------------------------
# against Milvus Lite, through the CLI

INTENTS = 20


def labelled_csv(path: Path, per_intent: int = 2) -> Path:
    """Held-out BANKING77 test questions of the first ``INTENTS`` intents; doc_id = their intent."""
    wanted = {d.id for d in intent_documents(1, intents=INTENTS)}
    taken: dict[str, int] = {}
    with banking77("test").open(newline="") as f, path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "label", "doc_id"])
        for row in csv.DictReader(f):
            intent = row["category"]
            if intent in wanted and taken.get(intent, 0) < per_intent:
                taken[intent] = taken.get(intent, 0) + 1
                writer.writerow([row["text"], intent, intent])
    return path


def shuffled(docs: list[Document], tag: str) -> list[Document]:
    """Each document's text under the next document's id: retrieval then names the wrong ids."""
    texts = [d.text for d in docs]
    return [
        Document(d.id, texts[(i + 1) % len(texts)], {**d.metadata, "set": tag}) for i, d in enumerate(docs)
    ]


def run_ingest(source: Path, spec: Path, uri: str, *extra: str) -> Result:
    args = ["ingest", "--source", str(source), "--spec", str(spec), "--milvus-uri", uri, *extra]
    return CliRunner().invoke(kb, args, catch_exceptions=False)


def sets_found(client: MilvusClient, alias: str, query: np.ndarray) -> set[str]:
    return {h["metadata"]["set"] for h in search_alias(client, alias, query)}


@pytest.fixture(scope="module")
def query_vector() -> np.ndarray:
    return Embedder.load(threads=2).embed(["I still have not received my new card"])[0]


@pytest.mark.milvus
def test_a_good_refresh_is_promoted_and_a_bad_one_rejected(
    milvus_server: LocalMilvus,
    milvus_client: MilvusClient,
    collection_name: str,
    query_vector: np.ndarray,
    tmp_path: Path,
) -> None:
    alias = collection_name
    spec = write_spec(tmp_path / "pd.yaml", alias, top_k=4)
    data = labelled_csv(tmp_path / "labelled.csv")
    log = tmp_path / "termination-log"
    gate = ["--eval", str(data), "--termination-log", str(log)]
    docs = intent_documents(per_intent=6, intents=INTENTS, tag="a")

    first = run_ingest(write_jsonl(tmp_path / "a.jsonl", docs), spec, milvus_server.uri, *gate)
    assert first.exit_code == 0, first.output
    report = json.loads(log.read_text())
    assert report["promoted"] is True and report["current_hit_at_k"] is None
    assert report["k"] == 4 and report["queries"] == 2 * INTENTS
    baseline = report["hit_at_k"]
    assert baseline >= 0.8, first.output

    # The same documents again (new metadata, so a new version): as good, so promoted.
    same = [Document(d.id, d.text, {**d.metadata, "set": "b"}) for d in docs]
    good = run_ingest(write_jsonl(tmp_path / "b.jsonl", same), spec, milvus_server.uri, *gate)
    assert good.exit_code == 0, good.output
    report = json.loads(log.read_text())
    assert report["promoted"] is True and report["reason"] == "Passed"
    assert report["hit_at_k"] == report["current_hit_at_k"] == baseline
    assert (report["version"], report["previous"]) == (f"{alias}_v2", f"{alias}_v1")
    assert kbmod.alias_target(milvus_client, alias) == f"{alias}_v2"
    assert f"{alias} -> {alias}_v2" in good.stdout and f"current {baseline:.4f}" in good.stdout

    # Texts shuffled across ids: retrieval names the wrong documents, so the alias stays.
    bad = run_ingest(write_jsonl(tmp_path / "c.jsonl", shuffled(docs, "c")), spec, milvus_server.uri, *gate)
    assert bad.exit_code == EXIT_REJECTED, bad.output
    report = json.loads(log.read_text())
    assert report["promoted"] is False and report["reason"] == "Regressed"
    assert report["current_hit_at_k"] == baseline and report["hit_at_k"] < baseline - 0.5
    assert report["version"] == f"{alias}_v3" and report["previous"] == f"{alias}_v2"
    line = next(x for x in bad.stdout.splitlines() if x.startswith("refresh rejected"))
    assert f"{alias} stays on {alias}_v2" in line
    assert f"{report['hit_at_k']:.4f}" in line and f"current {baseline:.4f}" in line
    assert kbmod.alias_target(milvus_client, alias) == f"{alias}_v2"
    assert sets_found(milvus_client, alias, query_vector) == {"b"}
    assert lifecycle.versions_of(alias, milvus_client.list_collections()) == [1, 2]

    # Unchanged source: nothing built, the live version's figure still reported.
    again = run_ingest(tmp_path / "b.jsonl", spec, milvus_server.uri, *gate)
    assert again.exit_code == 0, again.output
    report = json.loads(log.read_text())
    assert report["unchanged"] is True and report["reason"] == "Unchanged"
    assert report["hit_at_k"] == baseline and report["version"] == f"{alias}_v2"


@pytest.mark.milvus
def test_a_first_ingest_below_the_floor_creates_no_alias(
    milvus_server: LocalMilvus, milvus_client: MilvusClient, collection_name: str, tmp_path: Path
) -> None:
    alias = collection_name
    spec = write_spec(tmp_path / "pd.yaml", alias, top_k=4)
    data = labelled_csv(tmp_path / "labelled.csv")
    docs = shuffled(intent_documents(per_intent=6, intents=INTENTS), "a")
    log = tmp_path / "termination-log"
    result = run_ingest(
        write_jsonl(tmp_path / "a.jsonl", docs),
        spec,
        milvus_server.uri,
        "--eval",
        str(data),
        "--min-hit-at-k",
        "0.5",
        "--termination-log",
        str(log),
    )
    assert result.exit_code == EXIT_REJECTED, result.output
    report = json.loads(log.read_text())
    assert report["promoted"] is False and report["reason"] == BELOW_MIN
    assert report["hit_at_k"] < 0.5 and report["current_hit_at_k"] is None
    assert f"refresh rejected: {alias} is not created" in result.stdout
    assert "below --min-hit-at-k 0.5" in result.stdout
    assert kbmod.alias_target(milvus_client, alias) is None
    assert lifecycle.versions_of(alias, milvus_client.list_collections()) == []


def test_gate_input_errors_are_one_line_before_any_work(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "pd.yaml", "kb")
    source = write_jsonl(tmp_path / "kb.jsonl", [Document("a", "fine")])
    no_doc_ids = tmp_path / "no-ids.csv"
    no_doc_ids.write_text("text,label\nhello,greeting\n")
    unreachable = "http://127.0.0.1:1"
    cases = {
        "--min-hit-at-k needs --eval": ["--min-hit-at-k", "0.5"],
        "--max-hit-at-k-drop needs --eval": ["--max-hit-at-k-drop", "0.1"],
        "the refresh gate needs a doc_id column": ["--eval", str(no_doc_ids)],
        "absent.csv: no such file": ["--eval", str(tmp_path / "absent.csv")],
        "is not in the range": ["--eval", str(no_doc_ids), "--min-hit-at-k", "1.5"],
    }
    for message, extra in cases.items():
        result = CliRunner().invoke(
            kb,
            ["ingest", "--source", str(source), "--spec", str(spec), "--milvus-uri", unreachable, *extra],
        )
        assert result.exit_code in {1, 2}, (message, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output


def test_the_gate_module_is_pure() -> None:
    """The decision imports no client library (it reuses the operator's QualityGate function)."""
    code = (
        "import sys, phoenix_operator.quality.gate\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded & {'kopf', 'kubernetes', 'pymilvus', 'onnxruntime'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
