"""Knowledge-base documents: parsing JSONL/CSV, chunking, and the content hash (pure, no I/O).

A document is ``id``, ``text`` and free-form metadata. Chunks are what gets embedded: the
embedder truncates long inputs (MiniLM reads 256 word pieces), so a long article is cut into
overlapping windows of whole sentences instead of silently losing its tail.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

SourceFormat = Literal["jsonl", "csv"]

#: Longest document id kept in Milvus (a VARCHAR field needs a bound).
MAX_DOC_ID_LENGTH = 512

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


class SourceError(ValueError):
    """The source cannot be read as documents; the message says where and why."""


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    index: int
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChunkSettings:
    """Window size and overlap in words (a word is about 1.3 MiniLM word pieces)."""

    max_words: int = 160
    overlap_words: int = 32

    def __post_init__(self) -> None:
        if self.max_words < 1:
            raise ValueError("max_words must be at least 1")
        if not 0 <= self.overlap_words < self.max_words:
            raise ValueError("overlap_words must be at least 0 and less than max_words")


def detect_format(location: str, content_type: str | None = None) -> SourceFormat:
    """The format from the file name (``.jsonl``/``.ndjson``/``.csv``) or an HTTP Content-Type."""
    path = location.split("?", 1)[0].split("#", 1)[0].lower()
    if path.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if path.endswith(".csv"):
        return "csv"
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in ("application/jsonl", "application/x-ndjson", "application/json", "application/x-jsonlines"):
        return "jsonl"
    if kind in ("text/csv", "application/csv"):
        return "csv"
    raise SourceError(f"{location}: cannot tell the format; name it .jsonl or .csv, or pass --format")


def parse_documents(text: str, fmt: SourceFormat, location: str = "source") -> list[Document]:
    """Documents from JSONL or CSV text; every error names the line and the problem."""
    docs = _parse_jsonl(text, location) if fmt == "jsonl" else _parse_csv(text, location)
    if not docs:
        raise SourceError(f"{location}: no documents")
    seen: dict[str, str] = {}
    for where, doc in docs:
        if doc.id in seen:
            raise SourceError(f"{where}: duplicate document id {doc.id!r} (first at {seen[doc.id]})")
        seen[doc.id] = where
    return [doc for _, doc in docs]


def _document(raw: Mapping[str, Any], where: str) -> Document:
    if "id" not in raw or raw["id"] is None or str(raw["id"]).strip() == "":
        raise SourceError(f"{where}: missing 'id'")
    if "text" not in raw or not isinstance(raw["text"], str):
        raise SourceError(f"{where}: missing 'text' (a string)")
    doc_id = str(raw["id"]).strip()
    if len(doc_id) > MAX_DOC_ID_LENGTH:
        raise SourceError(f"{where}: id longer than {MAX_DOC_ID_LENGTH} characters")
    if not raw["text"].strip():
        raise SourceError(f"{where}: document {doc_id!r} has empty 'text'")
    metadata: dict[str, Any] = {}
    nested = raw.get("metadata")
    if isinstance(nested, Mapping):
        metadata.update(nested)
    elif nested is not None:
        metadata["metadata"] = nested
    metadata.update({k: v for k, v in raw.items() if k not in ("id", "text", "metadata")})
    return Document(doc_id, raw["text"], metadata)


def _parse_jsonl(text: str, location: str) -> list[tuple[str, Document]]:
    docs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{location}:{number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(raw, dict):
            raise SourceError(f"{where}: each line must be a JSON object with 'id' and 'text'")
        docs.append((where, _document(raw, where)))
    return docs


def _parse_csv(text: str, location: str) -> list[tuple[str, Document]]:
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    missing = [c for c in ("id", "text") if c not in columns]
    if missing:
        raise SourceError(f"{location}: CSV header lacks {', '.join(missing)} (has: {', '.join(columns)})")
    docs = []
    for row in reader:
        where = f"{location}:{reader.line_num}"
        if None in row:
            raise SourceError(f"{where}: more fields than the header has columns")
        cleaned = {k: v for k, v in row.items() if k in ("id", "text") or v not in (None, "")}
        docs.append((where, _document(cleaned, where)))
    return docs


def split_sentences(text: str) -> list[str]:
    """Sentences (ends at ``.!?`` followed by space, or a blank line), whitespace-normalised."""
    parts = (" ".join(part.split()) for part in _SENTENCE_END.split(text))
    return [part for part in parts if part]


def chunk_text(text: str, settings: ChunkSettings = ChunkSettings()) -> list[str]:
    """Windows of whole sentences up to ``max_words`` words, each starting with the previous one's tail.

    A sentence longer than a window is cut at word boundaries. The overlap carries the last
    ``overlap_words`` words of a window into the next, so a passage that straddles a boundary is
    whole in one of them. Every word of ``text`` appears in some chunk, in order.
    """
    words_of = [s.split() for s in split_sentences(text)]
    pieces: list[list[str]] = []
    for words in words_of:
        step = settings.max_words
        pieces.extend(words[i : i + step] for i in range(0, len(words), step))

    chunks: list[list[str]] = []
    current: list[str] = []
    fresh = 0  # words in ``current`` that are not carried over from the previous chunk
    for piece in pieces:
        if fresh and len(current) + len(piece) > settings.max_words:
            chunks.append(current)
            current = current[len(current) - settings.overlap_words :] if settings.overlap_words else []
            fresh = 0
        if len(current) + len(piece) > settings.max_words:
            current = current[len(current) + len(piece) - settings.max_words :]
        current = current + piece
        fresh += len(piece)
    if fresh:
        chunks.append(current)
    return [" ".join(chunk) for chunk in chunks]


def chunk_documents(docs: Iterable[Document], settings: ChunkSettings = ChunkSettings()) -> list[Chunk]:
    return [
        Chunk(doc.id, index, text, doc.metadata)
        for doc in docs
        for index, text in enumerate(chunk_text(doc.text, settings))
    ]


def content_hash(docs: Sequence[Document], settings: ChunkSettings, build: Mapping[str, Any]) -> str:
    """SHA-256 of the documents (order-independent) and of everything that shapes the vectors.

    ``build`` carries the embedder name, dimension, metric and index, so changing the model or the
    index produces a new version even when the documents are the same.
    """
    digest = hashlib.sha256()
    header = {"chunk": [settings.max_words, settings.overlap_words], "build": dict(build)}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for doc in sorted(docs, key=lambda d: d.id):
        record = [doc.id, doc.text, dict(doc.metadata)]
        digest.update(json.dumps(record, sort_keys=True, default=str, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()
