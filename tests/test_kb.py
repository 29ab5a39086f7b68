"""Knowledge-base ingestion (phoenix_operator.quality): chunking, parsing, the version lifecycle, and
``phoenix kb`` against a real Milvus Lite server with the real MiniLM embedder.

The invariant under test: the alias the gateway searches only ever points at a complete,
verified version; a failed or killed ingest leaves it where it was and leaves nothing behind
that the next run does not clean.
"""

from __future__ import annotations

import csv
import http.server
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st
from pymilvus import MilvusClient

from phoenix_operator.api.models import CollectionSpec
from phoenix_operator.clients.milvus import TEXT_FIELD, VECTOR_FIELD, ensure_collection
from phoenix_operator.data import banking77
from phoenix_operator.local.milvus import LocalMilvus
from phoenix_operator.ml.embedder import Embedder
from phoenix_operator.quality import kb as kbmod
from phoenix_operator.quality import lifecycle
from phoenix_operator.quality.cli import PAUSE_ENV, kb
from phoenix_operator.quality.documents import (
    ChunkSettings,
    Document,
    SourceError,
    chunk_documents,
    chunk_text,
    content_hash,
    parse_documents,
    split_sentences,
)
from phoenix_operator.quality.lifecycle import RollbackError, Version

# --------------------------------------------------------------------------------------------
# chunking and parsing (pure)


class TestChunking:
    def test_short_text_is_one_chunk_with_whitespace_normalised(self) -> None:
        assert chunk_text("  My card   is lost.\nWhat now? ") == ["My card is lost. What now?"]

    def test_sentences_stay_whole_and_windows_overlap(self) -> None:
        sentences = [f"Sentence {i} has exactly six words." for i in range(10)]
        chunks = chunk_text(" ".join(sentences), ChunkSettings(max_words=20, overlap_words=6))
        assert len(chunks) > 1
        for chunk in chunks:
            assert len(chunk.split()) <= 20
        for before, after in itertools.pairwise(chunks):
            assert after.split()[:6] == before.split()[-6:]
        # Apart from the carried overlap, every chunk is whole sentences.
        for chunk in chunks:
            fresh = " ".join(chunk.split()[6:]) if chunk is not chunks[0] else chunk
            assert fresh.startswith("Sentence") and fresh.endswith("words.")

    def test_a_sentence_longer_than_a_window_is_cut_at_words(self) -> None:
        words = [f"w{i}" for i in range(25)]
        chunks = chunk_text(" ".join(words), ChunkSettings(max_words=10, overlap_words=0))
        assert [c.split() for c in chunks] == [words[0:10], words[10:20], words[20:25]]

    def test_blank_line_ends_a_sentence(self) -> None:
        assert split_sentences("Title\n\nBody text. More") == ["Title", "Body text.", "More"]

    @settings(max_examples=60, deadline=None)
    @given(
        words=st.lists(
            st.sampled_from(["card", "lost.", "pin", "why?", "top-up", "fee!", "now"]), max_size=120
        ),
        max_words=st.integers(1, 30),
        overlap=st.integers(0, 29),
    )
    def test_every_word_is_kept_in_order_within_bounds(
        self, words: list[str], max_words: int, overlap: int
    ) -> None:
        overlap = min(overlap, max_words - 1)
        # Numbered, so a carried-over tail cannot be mistaken for a repeated word when rebuilding.
        words = [f"{i}{word}" for i, word in enumerate(words)]
        chunks = chunk_text(" ".join(words), ChunkSettings(max_words, overlap))
        assert all(1 <= len(c.split()) <= max_words for c in chunks)
        # Removing each chunk's carried-over prefix gives back the text exactly.
        rebuilt: list[str] = []
        for chunk in chunks:
            tokens = chunk.split()
            carried = 0
            for size in range(min(len(tokens), len(rebuilt)), 0, -1):
                if rebuilt[-size:] == tokens[:size] and size <= overlap:
                    carried = size
                    break
            rebuilt += tokens[carried:]
        assert rebuilt == words

    def test_settings_are_checked(self) -> None:
        with pytest.raises(ValueError, match="overlap"):
            ChunkSettings(max_words=10, overlap_words=10)


class TestParsing:
    def test_jsonl_keeps_metadata_from_keys_and_a_metadata_object(self) -> None:
        text = (
            '{"id": "a1", "text": "Cards arrive in 5 days.", "lang": "en", "metadata": {"url": "/cards"}}\n'
            "\n"
            '{"id": 7, "text": "Top-ups are free."}\n'
        )
        docs = parse_documents(text, "jsonl")
        assert docs == [
            Document("a1", "Cards arrive in 5 days.", {"url": "/cards", "lang": "en"}),
            Document("7", "Top-ups are free.", {}),
        ]

    def test_csv_extra_columns_become_metadata_and_blank_ones_are_dropped(self) -> None:
        text = 'id,text,section,owner\nx,"Hello, world.",faq,\n'
        assert parse_documents(text, "csv") == [Document("x", "Hello, world.", {"section": "faq"})]

    @pytest.mark.parametrize(
        ("text", "fmt", "message"),
        [
            ('{"id": "a", "text": "ok"}\n{"text": "no id"}\n', "jsonl", r"kb\.jsonl:2: missing 'id'"),
            ('{"id": "a", "text": "ok"}\n{oops\n', "jsonl", r"kb\.jsonl:2: not JSON"),
            ('["a", "b"]\n', "jsonl", r"kb\.jsonl:1: each line must be a JSON object"),
            ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "jsonl", r"duplicate document id 'a'"),
            ('{"id": "a", "text": "  "}\n', "jsonl", r"empty 'text'"),
            ("id,body\n1,hello\n", "csv", r"CSV header lacks text"),
            ("id,text\n1,hi,extra\n", "csv", r"kb\.jsonl:2: more fields than the header"),
            ("", "jsonl", r"no documents"),
        ],
    )
    def test_errors_name_the_line(self, text: str, fmt: Any, message: str) -> None:
        with pytest.raises(SourceError, match=message):
            parse_documents(text, fmt, "kb.jsonl")

    def test_content_hash_ignores_order_and_sees_every_change(self) -> None:
        docs = [Document("a", "one", {"k": 1}), Document("b", "two")]
        base = content_hash(docs, ChunkSettings(), {"embedder": "m"})
        assert content_hash(docs[::-1], ChunkSettings(), {"embedder": "m"}) == base
        changed = [
            content_hash([Document("a", "one!", {"k": 1}), docs[1]], ChunkSettings(), {"embedder": "m"}),
            content_hash([Document("a", "one", {"k": 2}), docs[1]], ChunkSettings(), {"embedder": "m"}),
            content_hash(docs, ChunkSettings(max_words=50), {"embedder": "m"}),
            content_hash(docs, ChunkSettings(), {"embedder": "other"}),
        ]
        assert base not in changed and len(set(changed)) == len(changed)


# --------------------------------------------------------------------------------------------
# reading a source: files and a real local HTTP server


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[str]:
    """A real HTTP server on a free loopback port serving ``tmp_path``."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class TestReadSource:
    def test_url_is_read_and_its_format_taken_from_the_name(self, tmp_path: Path, http_files: str) -> None:
        (tmp_path / "kb.jsonl").write_text('{"id": "a", "text": "hello"}\n')
        text, _ = kbmod.read_source(f"{http_files}/kb.jsonl")
        assert kbmod.source_format(f"{http_files}/kb.jsonl", None, None) == "jsonl"
        assert parse_documents(text, "jsonl") == [Document("a", "hello")]

    def test_missing_url_and_oversized_sources_are_clear_errors(
        self, tmp_path: Path, http_files: str
    ) -> None:
        with pytest.raises(SourceError, match="HTTP 404"):
            kbmod.read_source(f"{http_files}/nope.jsonl")
        (tmp_path / "big.csv").write_text("id,text\n" + "1,x\n" * 100)
        with pytest.raises(SourceError, match="over the 50-byte limit"):
            kbmod.read_source(f"{http_files}/big.csv", max_bytes=50)
        with pytest.raises(SourceError, match="over the 50-byte limit"):
            kbmod.read_source(str(tmp_path / "big.csv"), max_bytes=50)
        with pytest.raises(SourceError, match="no such file"):
            kbmod.read_source(str(tmp_path / "absent.csv"))
        with pytest.raises(SourceError, match="cannot tell the format"):
            kbmod.source_format(f"{http_files}/export", None, None)


# --------------------------------------------------------------------------------------------
# lifecycle decisions (pure)


def v(number: int, state: str = lifecycle.STATE_PROMOTED, sha: str = "s") -> Version:
    return Version(f"kb_v{number}", number, state, sha)


class TestLifecycle:
    def test_version_names_are_recognised_exactly(self) -> None:
        names = ["kb_v1", "kb_v12", "kb_v0", "kb_v01", "kbx_v3", "kb_v2_v3", "kb", "kb_vx", "kb_v3"]
        assert lifecycle.versions_of("kb", names) == [1, 3, 12]
        assert lifecycle.next_version("kb", names) == 13
        assert lifecycle.next_version("kb", ["kb", "other_v4"]) == 1

    def test_leftovers_are_unpromoted_versions_the_alias_does_not_serve(self) -> None:
        versions = [v(1), v(2, lifecycle.STATE_BUILDING), v(3, lifecycle.STATE_BUILDING)]
        assert lifecycle.leftovers(versions, "kb_v1") == [versions[1], versions[2]]
        # Killed between the alias switch and the state update: the target is not a leftover.
        assert lifecycle.leftovers(versions, "kb_v3") == [versions[1]]

    def test_unchanged_only_when_the_live_version_has_the_hash(self) -> None:
        versions = [v(1, sha="old"), v(2, sha="new")]
        assert lifecycle.unchanged(versions, "kb_v2", "new") == versions[1]
        assert lifecycle.unchanged(versions, "kb_v1", "new") is None
        assert lifecycle.unchanged(versions, None, "new") is None

    def test_retention_keeps_the_target_and_the_newest_others(self) -> None:
        versions = [v(1), v(2), v(3), v(4, lifecycle.STATE_BUILDING)]
        assert [x.name for x in lifecycle.to_retire(versions, "kb_v3", 2)] == ["kb_v1"]
        assert [x.name for x in lifecycle.to_retire(versions, "kb_v3", 1)] == ["kb_v2", "kb_v1"]
        # After a rollback to v1: v1 (live) and v3 (newest) stay, v2 goes.
        assert [x.name for x in lifecycle.to_retire(versions, "kb_v1", 2)] == ["kb_v2"]
        assert lifecycle.to_retire(versions, "kb_v3", 5) == []
        with pytest.raises(ValueError, match="at least one"):
            lifecycle.to_retire(versions, "kb_v3", 0)

    def test_rollback_goes_to_the_newest_older_promoted_version(self) -> None:
        versions = [v(1), v(2, lifecycle.STATE_BUILDING), v(3), v(5)]
        assert lifecycle.rollback_target(versions, "kb_v5").name == "kb_v3"
        assert lifecycle.rollback_target(versions, "kb_v3").name == "kb_v1"
        assert lifecycle.rollback_target(versions, "kb_v1", to=5).name == "kb_v5"
        with pytest.raises(RollbackError, match="no promoted version older than kb_v1"):
            lifecycle.rollback_target(versions, "kb_v1")
        with pytest.raises(RollbackError, match="version 2 is not a promoted version"):
            lifecycle.rollback_target(versions, "kb_v5", to=2)
        with pytest.raises(RollbackError, match="already points at kb_v5"):
            lifecycle.rollback_target(versions, "kb_v5", to=5)
        with pytest.raises(RollbackError, match="points at no version"):
            lifecycle.rollback_target(versions, None)


# --------------------------------------------------------------------------------------------
# against Milvus Lite

DIM = 384


@cache
def intent_texts() -> dict[str, list[str]]:
    by_intent: dict[str, list[str]] = defaultdict(list)
    with banking77("train").open(newline="") as f:
        for row in csv.DictReader(f):
            by_intent[row["category"]].append(row["text"].strip())
    return dict(by_intent)


def intent_documents(
    per_intent: int, offset: int = 0, intents: int | None = None, tag: str = "a"
) -> list[Document]:
    """One support article per BANKING77 intent, written from its training questions."""
    docs = []
    for intent, texts in list(intent_texts().items())[:intents]:
        sentences = [t if t[-1:] in ".?!" else t + "." for t in texts[offset : offset + per_intent]]
        docs.append(Document(intent, " ".join(sentences), {"intent": intent, "set": tag}))
    return docs


def write_jsonl(path: Path, docs: Sequence[Document]) -> Path:
    with path.open("w") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "text": d.text, **d.metadata}) + "\n")
    return path


def write_spec(path: Path, collection: str | None, top_k: int = 4) -> Path:
    """A PhoenixDeployment whose knowledge base is ``collection`` (no spec.retrieval when None)."""
    doc: dict[str, Any] = {
        "apiVersion": "serving.phoenixoperator.io/v1alpha1",
        "kind": "PhoenixDeployment",
        "metadata": {"name": "chat"},
        "spec": {
            "model": {"name": "llama-chat", "backend": "vllm", "repository": {"uri": "s3://models/x"}},
            "gateway": {"topK": top_k},
        },
    }
    if collection is not None:
        doc["spec"]["retrieval"] = {
            "collection": {"name": collection, "dimension": DIM, "index": {"type": "HNSW"}}
        }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load(threads=2)


def run_kb(*args: str) -> Result:
    return CliRunner().invoke(kb, list(args), catch_exceptions=False)


def target_of(client: MilvusClient, alias: str) -> str | None:
    return kbmod.alias_target(client, alias)


def version_state(client: MilvusClient, name: str) -> str:
    return str(client.describe_collection(name)["properties"][lifecycle.PROP_STATE])


def search_alias(client: MilvusClient, alias: str, vector: np.ndarray, k: int = 4) -> list[dict[str, Any]]:
    hits = client.search(
        alias,
        [vector.tolist()],
        anns_field=VECTOR_FIELD,
        limit=k,
        output_fields=[TEXT_FIELD, "doc_id", "metadata"],
    )
    return [dict(h["entity"]) for h in hits[0]]


def ingest_docs(
    client: MilvusClient, alias: str, docs: Sequence[Document], embedder: kbmod.TextEmbedder, **kw: Any
) -> kbmod.IngestResult:
    chunks = chunk_documents(docs)
    sha = content_hash(docs, ChunkSettings(), {"embedder": embedder.name})
    return kbmod.ingest(client, CollectionSpec(name=alias, dimension=DIM), chunks, embedder, sha, **kw)


class TestKbCliErrors:
    """Bad input stops before Milvus or the embedder is touched, with one line and no traceback."""

    def test_input_errors(self, tmp_path: Path) -> None:
        spec = write_spec(tmp_path / "pd.yaml", "kb")
        source = tmp_path / "kb.jsonl"
        source.write_text('{"id": "a", "text": "fine"}\n{"id": "b"}\n')
        valid = tmp_path / "ok.jsonl"
        valid.write_text('{"id": "a", "text": "fine"}\n')
        unreachable = ["--milvus-uri", "http://127.0.0.1:1"]
        cases = {
            "kb.jsonl:2: missing 'text'": ["--source", str(source), "--spec", str(spec), *unreachable],
            "cannot read": ["--source", str(source), "--spec", str(tmp_path / "absent.yaml"), *unreachable],
            "no such file": ["--source", str(tmp_path / "absent.csv"), "--spec", str(spec), *unreachable],
            "has no spec.retrieval": [
                "--source",
                str(source),
                "--spec",
                str(write_spec(tmp_path / "bare.yaml", None)),
                *unreachable,
            ],
            "pass --milvus-uri": ["--source", str(valid), "--spec", str(spec)],
        }
        for message, args in cases.items():
            result = CliRunner().invoke(kb, ["ingest", *args])
            assert result.exit_code == 1, (message, result.output)
            assert message in result.output and "Traceback" not in result.output, result.output
        result = CliRunner().invoke(
            kb,
            [
                "ingest",
                "--source",
                str(valid),
                "--spec",
                str(spec),
                *unreachable,
                "--token-env",
                "PHX_NO_SUCH_VAR",
            ],
        )
        assert result.exit_code == 1 and "PHX_NO_SUCH_VAR: the variable is unset or empty" in result.output


@pytest.mark.milvus
class TestIngest:
    def test_ingest_rerun_refresh_retention_rollback_through_the_cli(
        self,
        milvus_server: LocalMilvus,
        milvus_client: MilvusClient,
        collection_name: str,
        embedder: Embedder,
        tmp_path: Path,
    ) -> None:
        alias = collection_name
        spec = str(write_spec(tmp_path / "pd.yaml", alias))
        uri = ["--milvus-uri", milvus_server.uri, "--spec", spec]
        docs = intent_documents(per_intent=6)
        source = str(write_jsonl(tmp_path / "kb-a.jsonl", docs))

        first = run_kb("ingest", "--source", source, *uri)
        assert first.exit_code == 0, first.output
        assert f"{alias} -> {alias}_v1" in first.stdout
        assert target_of(milvus_client, alias) == f"{alias}_v1"
        chunks = len(chunk_documents(docs))
        assert kbmod._row_count(milvus_client, f"{alias}_v1") == chunks

        # Searching the alias finds the article of a held-out question's intent.
        test_rows = list(csv.DictReader(banking77("test").open(newline="")))[::40]
        vectors = embedder.embed([r["text"] for r in test_rows])
        found = [
            r["category"] in {h["doc_id"] for h in search_alias(milvus_client, alias, vec)}
            for r, vec in zip(test_rows, vectors, strict=True)
        ]
        assert sum(found) / len(found) >= 0.7, f"{sum(found)} of {len(found)} found"
        assert all(h[TEXT_FIELD] for h in search_alias(milvus_client, alias, vectors[0]))

        again = run_kb("ingest", "--source", source, *uri)
        assert again.exit_code == 0
        assert "already serves this source" in again.stdout
        assert versions(milvus_client, alias) == [1]

        second = run_kb(
            "ingest",
            "--source",
            str(write_jsonl(tmp_path / "kb-b.jsonl", intent_documents(6, 6, tag="b"))),
            *uri,
        )
        assert second.exit_code == 0, second.output
        assert f"{alias} -> {alias}_v2" in second.stdout and f"was {alias}_v1" in second.stdout
        third = run_kb(
            "ingest",
            "--source",
            str(write_jsonl(tmp_path / "kb-c.jsonl", intent_documents(6, 12, tag="c"))),
            *uri,
        )
        assert third.exit_code == 0, third.output
        assert f"dropped {alias}_v1 (beyond --retention 2)" in third.stdout
        assert versions(milvus_client, alias) == [2, 3]
        assert target_of(milvus_client, alias) == f"{alias}_v3"

        status = run_kb("status", *uri, "--json")
        assert status.exit_code == 0, status.output
        report = json.loads(status.stdout)
        assert report["target"] == f"{alias}_v3"
        assert [(x["version"], x["state"], x["live"]) for x in report["versions"]] == [
            (2, "promoted", False),
            (3, "promoted", True),
        ]
        assert all(x["rows"] > 0 for x in report["versions"])

        back = run_kb("rollback", *uri)
        assert back.exit_code == 0, back.output
        assert f"{alias} -> {alias}_v2 (was {alias}_v3)" in back.stdout
        assert {h["metadata"]["set"] for h in search_alias(milvus_client, alias, vectors[0])} == {"b"}
        stuck = CliRunner().invoke(kb, ["rollback", *uri])
        assert stuck.exit_code == 1
        assert f"no promoted version older than {alias}_v2" in stuck.output
        forward = run_kb("rollback", *uri, "--to-version", "3")
        assert forward.exit_code == 0 and target_of(milvus_client, alias) == f"{alias}_v3"
        # The reconciler sees the alias as its ready collection and changes nothing.
        report_ = ensure_collection(
            milvus_server.uri, None, "default", CollectionSpec(name=alias, dimension=DIM)
        )
        assert report_.ready and report_.actions == [], report_.message

    def test_adopts_the_empty_collection_the_operator_created(
        self,
        milvus_server: LocalMilvus,
        milvus_client: MilvusClient,
        collection_name: str,
        embedder: Embedder,
    ) -> None:
        spec = CollectionSpec(name=collection_name, dimension=DIM)
        assert ensure_collection(milvus_server.uri, None, "default", spec).actions[0] == "created collection"
        assert target_of(milvus_client, collection_name) is None
        result = ingest_docs(milvus_client, collection_name, intent_documents(2, intents=10), embedder)
        assert result.version == f"{collection_name}_v1"
        assert target_of(milvus_client, collection_name) == f"{collection_name}_v1"
        assert collection_name not in milvus_client.list_collections()
        after = ensure_collection(milvus_server.uri, None, "default", spec)
        assert after.ready and after.actions == [] and after.status.row_count == result.rows

    def test_a_plain_collection_with_rows_is_refused_and_kept(
        self,
        milvus_server: LocalMilvus,
        milvus_client: MilvusClient,
        collection_name: str,
        embedder: Embedder,
    ) -> None:
        spec = CollectionSpec(name=collection_name, dimension=DIM)
        ensure_collection(milvus_server.uri, None, "default", spec)
        # Released and unflushed (real Milvus counts only flushed rows in the statistics of such a one).
        milvus_client.release_collection(collection_name)
        milvus_client.insert(
            collection_name, [{VECTOR_FIELD: embedder.embed(["hi"])[0].tolist(), TEXT_FIELD: "kept"}]
        )
        state = kbmod.status(milvus_client, collection_name)
        assert (state.plain, state.plain_rows, state.target) == (True, 1, None)
        with pytest.raises(kbmod.KbError, match="plain collection holding 1 rows"):
            ingest_docs(milvus_client, collection_name, intent_documents(2, intents=5), embedder)
        assert versions(milvus_client, collection_name) == []
        milvus_client.load_collection(collection_name)
        assert (
            milvus_client.query(collection_name, filter="", output_fields=[TEXT_FIELD])[0][TEXT_FIELD]
            == "kept"
        )

    def test_a_failed_run_drops_its_own_version_and_keeps_the_alias(
        self, milvus_client: MilvusClient, collection_name: str, embedder: Embedder
    ) -> None:
        alias = collection_name
        ingest_docs(milvus_client, alias, intent_documents(2, intents=5), embedder)

        class FailsOnSecondBatch:
            """The real embedder, failing on its second call (a narrow seam: an embedder crash)."""

            name, dimension = embedder.name, embedder.dimension
            calls = 0

            def embed(self, texts: Sequence[str]) -> np.ndarray:
                self.calls += 1
                if self.calls == 2:
                    raise RuntimeError("embedder crashed")
                return embedder.embed(texts)

        docs = intent_documents(1, offset=3, intents=kbmod.EMBED_BATCH + 10)
        with pytest.raises(RuntimeError, match="embedder crashed"):
            ingest_docs(milvus_client, alias, docs, FailsOnSecondBatch())
        assert versions(milvus_client, alias) == [1]
        assert target_of(milvus_client, alias) == f"{alias}_v1"

    def test_dimension_mismatch_is_refused_before_anything_is_created(
        self, milvus_client: MilvusClient, collection_name: str, embedder: Embedder
    ) -> None:
        spec = CollectionSpec(name=collection_name, dimension=128)
        with pytest.raises(
            kbmod.KbError, match=r"384-dimensional vectors but retrieval\.collection\.dimension is 128"
        ):
            kbmod.ingest(milvus_client, spec, chunk_documents([Document("a", "x")]), embedder, "sha")
        assert versions(milvus_client, collection_name) == []

    def test_searches_never_fail_or_come_back_empty_while_the_alias_moves(
        self,
        milvus_server: LocalMilvus,
        milvus_client: MilvusClient,
        collection_name: str,
        embedder: Embedder,
    ) -> None:
        alias = collection_name
        ingest_docs(milvus_client, alias, intent_documents(3, intents=30, tag="a"), embedder)
        query = embedder.embed(["I lost my card, what should I do?"])[0]
        stop = threading.Event()
        outcomes: list[str] = []
        sets_seen: set[str] = set()

        def search_loop() -> None:
            client = MilvusClient(milvus_server.uri, timeout=10)
            try:
                while not stop.is_set():
                    try:
                        hits = search_alias(client, alias, query)
                    except Exception as exc:
                        outcomes.append(f"error: {exc}")
                        continue
                    outcomes.append("ok" if hits else "empty")
                    sets_seen.update(h["metadata"]["set"] for h in hits)
            finally:
                client.close()

        searcher = threading.Thread(target=search_loop)
        searcher.start()
        try:
            ingest_docs(milvus_client, alias, intent_documents(3, offset=3, intents=30, tag="b"), embedder)
            for _ in range(10):
                kbmod.rollback(milvus_client, alias, to=1)
                time.sleep(0.02)
                kbmod.rollback(milvus_client, alias, to=2)
                time.sleep(0.02)
        finally:
            stop.set()
            searcher.join(timeout=30)
        failures = [o for o in outcomes if o != "ok"]
        assert failures == [], failures[:5]
        assert len(outcomes) >= 20, "the search loop did not overlap the swaps"
        assert sets_seen == {"a", "b"}, "searches did not span both versions"


def versions(client: MilvusClient, alias: str) -> list[int]:
    return lifecycle.versions_of(alias, client.list_collections())


def start_cli_ingest(source: Path, spec: Path, uri: str, pause_s: float) -> subprocess.Popen[str]:
    """``phoenix kb ingest`` in its own process, pausing between its verified build and the alias switch."""
    env = {**os.environ, PAUSE_ENV: str(pause_s)}
    code = "from phoenix_operator.quality.cli import kb; kb()"
    args = ["ingest", "--source", str(source), "--spec", str(spec), "--milvus-uri", uri]
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout_s: float = 120) -> list[str]:
    """Lines of the process's stderr up to the first containing ``needle``."""
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    proc.kill()
    raise AssertionError(f"no line with {needle!r} from the ingest; it wrote:\n{''.join(seen)}")


@pytest.mark.milvus
@pytest.mark.slow
class TestInterruptedIngest:
    def test_a_killed_ingest_leaves_the_alias_and_the_next_run_cleans_up(
        self,
        milvus_server: LocalMilvus,
        milvus_client: MilvusClient,
        collection_name: str,
        embedder: Embedder,
        tmp_path: Path,
    ) -> None:
        alias = collection_name
        ingest_docs(milvus_client, alias, intent_documents(2, intents=10, tag="a"), embedder)
        spec = write_spec(tmp_path / "pd.yaml", alias)
        source = write_jsonl(tmp_path / "b.jsonl", intent_documents(2, offset=2, intents=10, tag="b"))
        proc = start_cli_ingest(source, spec, milvus_server.uri, pause_s=300)
        try:
            lines = wait_for_line(proc, "before promoting")
            assert any(f"verified {alias}_v2" in line for line in lines)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
        assert target_of(milvus_client, alias) == f"{alias}_v1"
        assert version_state(milvus_client, f"{alias}_v2") == lifecycle.STATE_BUILDING
        query = embedder.embed(["my card got stolen"])[0]
        assert {h["metadata"]["set"] for h in search_alias(milvus_client, alias, query)} == {"a"}

        rerun = run_kb(
            "ingest", "--source", str(source), "--spec", str(spec), "--milvus-uri", milvus_server.uri
        )
        assert rerun.exit_code == 0, rerun.output
        assert f"dropped {alias}_v2 (left unfinished by an earlier run)" in rerun.stdout
        assert target_of(milvus_client, alias) == f"{alias}_v2"
        assert version_state(milvus_client, f"{alias}_v2") == lifecycle.STATE_PROMOTED
        assert versions(milvus_client, alias) == [1, 2]
        assert {h["metadata"]["set"] for h in search_alias(milvus_client, alias, query)} == {"b"}

    def test_a_terminated_ingest_drops_its_own_version(
        self,
        milvus_server: LocalMilvus,
        milvus_client: MilvusClient,
        collection_name: str,
        embedder: Embedder,
        tmp_path: Path,
    ) -> None:
        alias = collection_name
        ingest_docs(milvus_client, alias, intent_documents(2, intents=10), embedder)
        source = write_jsonl(tmp_path / "b.jsonl", intent_documents(2, offset=2, intents=10))
        proc = start_cli_ingest(
            source, write_spec(tmp_path / "pd.yaml", alias), milvus_server.uri, pause_s=300
        )
        try:
            wait_for_line(proc, "before promoting")
            assert versions(milvus_client, alias) == [1, 2]
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 128 + signal.SIGTERM, stderr
        assert f"dropping {alias}_v2: this run did not finish" in stderr
        assert versions(milvus_client, alias) == [1]
        assert target_of(milvus_client, alias) == f"{alias}_v1"
