"""Offline evaluation (phoenix_operator.quality): the metric functions, the labelled-set reader, and
``phoenix eval`` on BANKING77's test split with the default classifier, plus retrieval hit@k
through the real embedder and Milvus Lite.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from pymilvus import MilvusClient

from phoenix_operator.api.models import PhoenixDeployment
from phoenix_operator.data import banking77
from phoenix_operator.local.milvus import LocalMilvus
from phoenix_operator.quality.cli import evaluate, kb
from phoenix_operator.quality.evaluate import DataError, most_urgent_routed_class, parse_labelled
from phoenix_operator.quality.metrics import (
    TERMINATION_MESSAGE_LIMIT,
    EvalReport,
    classification_figures,
    hit_at_k,
    render_table,
    report_dict,
    termination_message,
    urgent_figures,
)
from test_kb import intent_documents, write_jsonl, write_spec

REPO = Path(__file__).resolve().parents[1]
PRODUCTION = REPO / "examples" / "production.yaml"

#: Floors under the figures measured with the default classifier and MiniLM (docs/quality.md): the
#: classifier on BANKING77's test split, and hit@4 on one article per intent.
MACRO_F1_FLOOR = 0.92
ACCURACY_FLOOR = 0.92
URGENT_RECALL_FLOOR = 0.95
URGENT_PRECISION_FLOOR = 0.9
HIT_AT_4_FLOOR = 0.9


def production() -> PhoenixDeployment:
    doc = next(
        d for d in yaml.safe_load_all(PRODUCTION.read_text()) if d and d["kind"] == "PhoenixDeployment"
    )
    return PhoenixDeployment.model_validate(doc)


# --------------------------------------------------------------------------------------------
# metric functions (pure)


class TestMetrics:
    def test_classification_figures_match_a_hand_count(self) -> None:
        truth = ["a", "a", "b", "b", "c"]
        predicted = ["a", "b", "b", "b", "a"]
        figures = classification_figures(truth, predicted)
        # a: P 1/2, R 1/2 -> F1 0.5; b: P 2/3, R 1 -> F1 0.8; c: never predicted -> 0.
        assert figures.accuracy == pytest.approx(3 / 5)
        assert figures.per_class_f1 == pytest.approx({"a": 0.5, "b": 0.8, "c": 0.0})
        assert figures.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)
        assert figures.examples == 5

    def test_macro_f1_averages_over_the_true_labels_only(self) -> None:
        # A predicted label that never occurs in the truth must not dilute the average.
        figures = classification_figures(["a", "a"], ["a", "z"])
        assert set(figures.per_class_f1) == {"a"}
        assert figures.macro_f1 == pytest.approx(2 / 3)

    def test_urgent_recall_and_precision(self) -> None:
        truth = [True, True, True, False, False]
        predicted = [True, False, True, True, False]
        u = urgent_figures("urgent", truth, predicted)
        assert (u.recall, u.precision, u.support, u.predicted) == (
            pytest.approx(2 / 3),
            pytest.approx(2 / 3),
            3,
            3,
        )
        none = urgent_figures("urgent", [False, False], [False, False])
        assert (none.recall, none.precision) == (0.0, 0.0)

    def test_hit_at_k_counts_the_relevant_document_in_the_first_k(self) -> None:
        retrieved = [["d1", "d2", "d3"], ["d3", "d3", "d9"], ["d4"]]
        assert hit_at_k(["d2", "d9", "d5"], retrieved, k=3).hit_at_k == pytest.approx(2 / 3)
        assert hit_at_k(["d2", "d9", "d5"], retrieved, k=1).hit_at_k == 0.0
        with pytest.raises(ValueError, match="no queries"):
            hit_at_k([], [], k=1)

    def test_mismatched_lengths_are_errors(self) -> None:
        with pytest.raises(ValueError, match="2 labels but 1 predictions"):
            classification_figures(["a", "b"], ["a"])

    def test_termination_message_is_compact_and_under_the_limit(self) -> None:
        labels = [f"intent_with_a_rather_long_name_{i}" for i in range(200)]
        report = EvalReport(
            classification_figures(labels, labels[::-1]),
            urgent_figures("urgent", [True, False], [True, True]),
            hit_at_k(["a"], [["a"]], 4),
        )
        message = termination_message(report, extra={f"note_{i}": "x" * 100 for i in range(60)})
        assert len(message.encode()) < TERMINATION_MESSAGE_LIMIT
        figures = json.loads(message)
        assert figures["urgent_recall"] == 1.0 and figures["urgent_precision"] == 0.5
        assert figures["hit_at_k"] == 1.0 and figures["k"] == 4
        assert figures["examples"] == 200 and "per_class_f1" not in figures
        assert "\n" not in message and " " not in message
        # The full report keeps every class.
        assert len(report_dict(report)["per_class_f1"]) == 200

    def test_table_lists_the_weakest_classes_first(self) -> None:
        table = render_table(
            EvalReport(classification_figures(["a", "b", "b", "b"], ["a", "a", "b", "b"])), worst=1
        )
        assert "accuracy" in table and "macro-F1" in table
        assert table.rstrip().endswith("lowest F1 (1 of 2 classes):\n  a  0.6667")


class TestLabelledSet:
    def test_banking77_category_column_and_optional_doc_ids(self) -> None:
        data = parse_labelled(
            "text,category,doc_id\nlost my card,lost_or_stolen_card,kb-1\nhi there,greeting,\n"
        )
        assert data.labels == ["lost_or_stolen_card", "greeting"]
        assert data.doc_ids == ["kb-1", None] and data.has_doc_ids

    def test_the_shipped_test_split_reads(self) -> None:
        data = parse_labelled(banking77("test").read_text(), "test.csv")
        assert len(data.texts) > 3000 and not data.has_doc_ids
        assert len(set(data.labels)) == 77

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("question,label\nx,y\n", r"needs columns text and label"),
            ("text,label\nx,\n", r"data:2: empty text or label"),
            ("text,label\n", r"no rows"),
        ],
    )
    def test_errors(self, text: str, message: str) -> None:
        with pytest.raises(DataError, match=message):
            parse_labelled(text)

    def test_most_urgent_routed_class_follows_levels(self) -> None:
        spec = production().spec
        assert most_urgent_routed_class(spec) == "urgent"
        routed_bulk = spec.model_copy(
            update={
                "gateway": spec.gateway.model_copy(
                    update={"routes": [spec.gateway.routes[0].model_copy(update={"priority_class": "bulk"})]}
                )
            }
        )
        assert most_urgent_routed_class(routed_bulk) == "bulk"
        assert (
            most_urgent_routed_class(
                spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"routes": []})})
            )
            is None
        )


# --------------------------------------------------------------------------------------------
# phoenix eval


def run_eval(*args: str) -> Result:
    return CliRunner().invoke(evaluate, list(args), catch_exceptions=False)


class TestEvalCli:
    def test_input_errors_are_one_clear_line(self, tmp_path: Path) -> None:
        missing = run_eval("--data", str(tmp_path / "absent.csv"))
        assert missing.exit_code == 1 and "absent.csv: no such file" in missing.output
        bad = tmp_path / "bad.csv"
        bad.write_text("question,answer\nx,y\n")
        assert "needs columns text and label" in run_eval("--data", str(bad)).output
        good = tmp_path / "good.csv"
        good.write_text("text,label\nhello,greeting\n")
        no_spec = run_eval("--data", str(good), "--milvus-uri", "http://127.0.0.1:1")
        assert no_spec.exit_code == 1 and "--milvus-uri needs --spec" in no_spec.output
        no_dir = run_eval("--data", str(good), "--classifier", str(tmp_path / "nowhere"))
        assert no_dir.exit_code == 1 and "cannot load the classifier" in no_dir.output
        assert "Traceback" not in no_dir.output

    @pytest.mark.slow
    def test_banking77_test_split_with_the_default_classifier(self, tmp_path: Path) -> None:
        report_path, message_path = tmp_path / "eval.json", tmp_path / "termination-log"
        result = run_eval(
            "--data",
            str(banking77("test")),
            "--spec",
            str(PRODUCTION),
            "--json",
            str(report_path),
            "--termination-log",
            str(message_path),
        )
        assert result.exit_code == 0, result.output
        report = json.loads(report_path.read_text())
        assert report["examples"] == 3080 and len(report["per_class_f1"]) == 77
        assert report["macro_f1"] >= MACRO_F1_FLOOR
        assert report["accuracy"] >= ACCURACY_FLOOR
        assert report["urgent"]["class"] == "urgent"
        assert report["urgent"]["recall"] >= URGENT_RECALL_FLOOR
        assert report["urgent"]["precision"] >= URGENT_PRECISION_FLOOR
        # 9 urgent intents x 40 test texts each in BANKING77's balanced test split.
        assert report["urgent"]["support"] == 360
        message = message_path.read_bytes()
        assert len(message) < TERMINATION_MESSAGE_LIMIT
        figures = json.loads(message)
        assert (
            figures["macro_f1"] == report["macro_f1"]
            and figures["urgent_recall"] == report["urgent"]["recall"]
        )
        assert f"macro-F1{'':14}{report['macro_f1']:10.4f}" in result.stdout


@pytest.mark.milvus
@pytest.mark.slow
def test_retrieval_hit_at_k_through_the_alias(
    milvus_server: LocalMilvus, milvus_client: MilvusClient, collection_name: str, tmp_path: Path
) -> None:
    """One article per intent (from training questions); held-out questions must retrieve their own."""
    alias = collection_name
    source = write_jsonl(tmp_path / "kb.jsonl", intent_documents(per_intent=10))
    spec = write_spec(tmp_path / "pd.yaml", alias, top_k=4)
    ingest = CliRunner().invoke(
        kb, ["ingest", "--source", str(source), "--spec", str(spec), "--milvus-uri", milvus_server.uri]
    )
    assert ingest.exit_code == 0, ingest.output

    per_intent: dict[str, int] = {}
    rows = []
    with banking77("test").open(newline="") as f:
        for row in csv.DictReader(f):
            if per_intent.get(row["category"], 0) < 2:
                per_intent[row["category"]] = per_intent.get(row["category"], 0) + 1
                rows.append({"text": row["text"], "label": row["category"], "doc_id": row["category"]})
    data = tmp_path / "labelled.csv"
    with data.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label", "doc_id"])
        writer.writeheader()
        writer.writerows(rows)

    report_path = tmp_path / "eval.json"
    result = run_eval(
        "--data",
        str(data),
        "--spec",
        str(spec),
        "--milvus-uri",
        milvus_server.uri,
        "--json",
        str(report_path),
        "--termination-log",
        str(tmp_path / "message"),
    )
    assert result.exit_code == 0, result.output
    retrieval = json.loads(report_path.read_text())["retrieval"]
    assert retrieval["k"] == 4 and retrieval["queries"] == 154
    assert retrieval["hit_at_k"] >= HIT_AT_4_FLOOR
    assert json.loads((tmp_path / "message").read_text())["hit_at_k"] == retrieval["hit_at_k"]
    assert "hit@4" in result.stdout
