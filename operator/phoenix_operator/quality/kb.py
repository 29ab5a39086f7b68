"""Knowledge-base ingestion into versioned Milvus collections behind an alias (the Milvus edge).

The decisions live in ``lifecycle``; this module reads the source, talks to Milvus and orders the
steps so the alias only ever moves to a complete, indexed, loaded and verified collection.
See docs/quality.md (ingest steps and Milvus Lite's measured behaviour).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.client.types import LoadState
from pymilvus.exceptions import MilvusException

from phoenix_operator.api.models import CollectionSpec
from phoenix_operator.clients.milvus import (
    PRIMARY_FIELD,
    TEXT_FIELD,
    TEXT_MAX_LENGTH,
    VECTOR_FIELD,
    index_params,
)
from phoenix_operator.quality import lifecycle
from phoenix_operator.quality.documents import (
    MAX_DOC_ID_LENGTH,
    Chunk,
    SourceError,
    SourceFormat,
    detect_format,
)
from phoenix_operator.quality.gate import RefreshVerdict
from phoenix_operator.quality.lifecycle import Version

log = logging.getLogger(__name__)

#: Fields besides the reconciler's id/embedding/text: which document a chunk came from, its place
#: in the document, and the document's metadata.
DOC_ID_FIELD = "doc_id"
CHUNK_FIELD = "chunk"
METADATA_FIELD = "metadata"

DEFAULT_MAX_SOURCE_BYTES = 256 * 1024 * 1024
EMBED_BATCH = 64


class KbError(RuntimeError):
    """An ingest, rollback or status that cannot go on; the message says what to do."""


class TextEmbedder(Protocol):
    name: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------
# source


def read_source(
    location: str, max_bytes: int = DEFAULT_MAX_SOURCE_BYTES, timeout_s: float = 60.0
) -> tuple[str, SourceFormat | None]:
    """The text of a local file or an HTTP(S) URL, refusing more than ``max_bytes``.

    Returns the text and the format a Content-Type named (None when it named none).
    """
    if location.startswith(("http://", "https://")):
        request = urllib.request.Request(location, headers={"User-Agent": "phoenix-kb-ingest"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise SourceError(f"{location}: {declared} bytes is over the {max_bytes}-byte limit")
                data = response.read(max_bytes + 1)
                content_type = response.headers.get("Content-Type")
        except urllib.error.HTTPError as exc:
            raise SourceError(f"{location}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SourceError(f"{location}: cannot fetch ({reason})") from None
        fmt: SourceFormat | None = None
        try:
            fmt = detect_format("", content_type)
        except SourceError:
            fmt = None
    else:
        path = Path(location)
        if not path.is_file():
            raise SourceError(f"{location}: no such file")
        if path.stat().st_size > max_bytes:
            raise SourceError(f"{location}: {path.stat().st_size} bytes is over the {max_bytes}-byte limit")
        data = path.read_bytes()
        fmt = None
    if len(data) > max_bytes:
        raise SourceError(f"{location}: more than the {max_bytes}-byte limit")
    try:
        return data.decode("utf-8-sig"), fmt
    except UnicodeDecodeError as exc:
        raise SourceError(f"{location}: not UTF-8 text (byte {exc.start})") from None


def source_format(
    location: str, declared: SourceFormat | None, override: SourceFormat | None
) -> SourceFormat:
    """``--format`` wins, then the file name, then the server's Content-Type."""
    if override is not None:
        return override
    try:
        return detect_format(location)
    except SourceError:
        if declared is not None:
            return declared
        raise


# --------------------------------------------------------------------------------------------
# Milvus


def client_uri(uri: str) -> str:
    """pymilvus rejects ``grpc://`` (which the API accepts); it means plain gRPC, i.e. ``http://``."""
    return "http://" + uri[len("grpc://") :] if uri.startswith("grpc://") else uri


def connect(
    uri: str, token: str | None = None, db_name: str = "default", timeout_s: float = 30
) -> MilvusClient:
    try:
        return MilvusClient(uri=client_uri(uri), token=token or "", db_name=db_name, timeout=timeout_s)
    except (MilvusException, OSError, ValueError) as exc:
        raise KbError(f"cannot connect to Milvus at {uri}: {exc}") from exc


def alias_target(client: MilvusClient, alias: str) -> str | None:
    """The collection ``alias`` points at, or None when no such alias exists."""
    if alias not in client.list_aliases().get("aliases", []):
        return None
    return str(client.describe_alias(alias)["collection_name"])


def _row_count(client: MilvusClient, name: str) -> int | None:
    """Rows of a collection: exact when loaded, flushed-segment statistics otherwise."""
    try:
        if client.get_load_state(name).get("state") == LoadState.Loaded:
            return int(client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"])
        return int(client.get_collection_stats(name)["row_count"])
    except (MilvusException, KeyError, IndexError, ValueError):
        return None


def list_versions(client: MilvusClient, alias: str, with_rows: bool = False) -> list[Version]:
    """Every ``<alias>_v<N>`` collection with the state recorded in its properties."""
    versions = []
    for name in client.list_collections():
        number = lifecycle.version_number(alias, name)
        if number is None:
            continue
        props = client.describe_collection(name).get("properties") or {}
        versions.append(
            Version(
                name=name,
                number=number,
                state=str(props.get(lifecycle.PROP_STATE, lifecycle.STATE_BUILDING)),
                source_sha256=props.get(lifecycle.PROP_SOURCE_SHA),
                rows=_row_count(client, name) if with_rows else None,
                created=props.get(lifecycle.PROP_CREATED),
            )
        )
    return sorted(versions, key=lambda v: v.number)


def _schema(dimension: int) -> Any:
    """The reconciler's schema (id, embedding, text: what the gateway reads) plus chunk provenance."""
    schema = MilvusClient.create_schema(
        auto_id=True, enable_dynamic_field=True, description="knowledge base managed by Phoenix"
    )
    schema.add_field(PRIMARY_FIELD, DataType.INT64, is_primary=True)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dimension)
    schema.add_field(TEXT_FIELD, DataType.VARCHAR, max_length=TEXT_MAX_LENGTH)
    schema.add_field(DOC_ID_FIELD, DataType.VARCHAR, max_length=MAX_DOC_ID_LENGTH * 4)
    schema.add_field(CHUNK_FIELD, DataType.INT64)
    schema.add_field(METADATA_FIELD, DataType.JSON)
    return schema


def fit_bytes(text: str, limit: int = TEXT_MAX_LENGTH) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes at a character boundary (VARCHAR bounds bytes)."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")


def _batches(items: Sequence[Chunk], size: int) -> Iterator[Sequence[Chunk]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _set_state(client: MilvusClient, name: str, state: str) -> None:
    client.alter_collection_properties(name, properties={lifecycle.PROP_STATE: state})


def _drop(client: MilvusClient, name: str, alias: str) -> None:
    """Drop a version, re-checking first that the alias does not point at it."""
    if alias_target(client, alias) == name:
        raise KbError(f"refusing to drop {name}: the alias {alias} points at it")
    client.release_collection(name)
    client.drop_collection(name)


def _wait_index(client: MilvusClient, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        index_names = client.list_indexes(name, field_name=VECTOR_FIELD)
        info = client.describe_index(name, index_name=index_names[0]) if index_names else {}
        state = str(info.get("state", ""))
        if state == "Finished" and not info.get("pending_index_rows"):
            return
        if state == "Failed":
            why = info.get("index_state_fail_reason") or "no reason given"
            raise KbError(f"building the index of {name} failed: {why}")
        if time.monotonic() > deadline:
            raise KbError(f"the index of {name} is not built after {timeout_s:.0f}s (state {state or '?'})")
        time.sleep(0.2)


@dataclass(frozen=True)
class AliasState:
    """What the alias name currently is: an alias (with its target), a plain collection, or nothing."""

    target: str | None
    plain: bool = False  # a plain collection holds the alias's name
    plain_rows: int | None = None  # its rows, None when Milvus would not count them


def inspect_alias(client: MilvusClient, alias: str) -> AliasState:
    target = alias_target(client, alias)
    if target is None and client.has_collection(alias):
        if client.get_load_state(alias).get("state") != LoadState.Loaded:
            client.flush(alias)  # an unloaded collection's statistics only count flushed rows
        return AliasState(None, True, _row_count(client, alias))
    return AliasState(target)


def _check_plain(alias: str, state: AliasState) -> None:
    """Refuse a plain collection of the alias's name unless it is known to be empty."""
    if not state.plain or state.plain_rows == 0:
        return
    held = "rows Milvus would not count" if state.plain_rows is None else f"{state.plain_rows} rows"
    raise KbError(
        f"{alias} is a plain collection holding {held}, not an alias, so versioned ingestion cannot "
        f"take over its name. Phoenix never drops data: move the data into the knowledge-base source "
        f"and drop {alias} yourself, or point retrieval.collection.name at a new name. (An empty "
        "collection of that name, as the operator creates, is replaced.)"
    )


@dataclass(frozen=True)
class IngestResult:
    version: str
    rows: int
    unchanged: bool
    previous: str | None
    cleaned: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    #: The quality gate's verdict when one judged the new version (None without ``judge``).
    verdict: RefreshVerdict | None = None

    @property
    def promoted(self) -> bool:
        """Whether this run moved the alias to a new version."""
        return not self.unchanged and (self.verdict is None or self.verdict.promote)


def ingest(
    client: MilvusClient,
    spec: CollectionSpec,
    chunks: Sequence[Chunk],
    embedder: TextEmbedder,
    source_sha256: str,
    *,
    source_label: str = "",
    documents: int = 0,
    retention: int = lifecycle.DEFAULT_RETENTION,
    index_timeout_s: float = 600.0,
    before_promote: Callable[[str], None] | None = None,
    judge: Callable[[str, str | None], RefreshVerdict] | None = None,
) -> IngestResult:
    """Build ``<alias>_v<N>`` from ``chunks`` and move the alias to it once it is verified.

    Order: clean leftovers of failed runs; stop if the live version has this source's hash;
    create the version (state ``building``), embed and insert in batches, flush, wait for the
    index, load, check the row count and that a search answers; then ``judge(new, current)`` (the
    quality gate: a rejected version is dropped and the alias stays), ``before_promote``, the alias
    switch, state ``promoted``, and retirement of versions beyond ``retention``. Any failure before
    the switch drops the new version and re-raises.
    """
    alias = spec.name
    if embedder.dimension != spec.dimension:
        raise KbError(
            f"the embedder {embedder.name} makes {embedder.dimension}-dimensional vectors but "
            f"retrieval.collection.dimension is {spec.dimension}"
        )
    if not chunks:
        raise KbError("no chunks to ingest")
    state = inspect_alias(client, alias)
    _check_plain(alias, state)

    versions = list_versions(client, alias)
    cleaned = []
    for leftover in lifecycle.leftovers(versions, state.target):
        log.info("dropping %s: left unfinished by an earlier run", leftover.name)
        _drop(client, leftover.name, alias)
        cleaned.append(leftover.name)
    versions = [v for v in versions if v.name not in cleaned]
    live = next((v for v in versions if v.name == state.target), None)
    if live is not None and not live.promoted:
        _set_state(client, live.name, lifecycle.STATE_PROMOTED)  # switched, but killed before marking

    same = lifecycle.unchanged(versions, state.target, source_sha256)
    if same is not None:
        log.info("%s already serves this source (sha256 %s): nothing to do", same.name, source_sha256[:12])
        retired = _retire(client, alias, retention)
        return IngestResult(same.name, _row_count(client, same.name) or 0, True, None, cleaned, retired)

    name = lifecycle.version_name(alias, lifecycle.next_version(alias, client.list_collections()))
    properties = {
        lifecycle.PROP_STATE: lifecycle.STATE_BUILDING,
        lifecycle.PROP_SOURCE_SHA: source_sha256,
        lifecycle.PROP_SOURCE: source_label[:1024],
        lifecycle.PROP_CHUNKS: str(len(chunks)),
        lifecycle.PROP_DOCUMENTS: str(documents),
        lifecycle.PROP_CREATED: dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        lifecycle.PROP_EMBEDDER: embedder.name,
    }
    client.create_collection(name, schema=_schema(spec.dimension), properties=properties)
    log.info("created collection %s for %d chunks", name, len(chunks))
    try:
        client.create_index(name, index_params(client, spec), sync=False)
        first_vector: list[float] | None = None
        for batch in _batches(chunks, EMBED_BATCH):
            vectors = embedder.embed([c.text for c in batch])
            rows = [
                {
                    VECTOR_FIELD: vector.tolist(),
                    TEXT_FIELD: fit_bytes(c.text),
                    DOC_ID_FIELD: c.doc_id,
                    CHUNK_FIELD: c.index,
                    METADATA_FIELD: dict(c.metadata),
                }
                for c, vector in zip(batch, vectors, strict=True)
            ]
            client.insert(name, rows)
            if first_vector is None:
                first_vector = rows[0][VECTOR_FIELD]
        client.flush(name)
        _wait_index(client, name, index_timeout_s)
        client.load_collection(name, replica_number=spec.replicas)
        rows_now = _row_count(client, name)
        if rows_now != len(chunks):
            raise KbError(f"{name} holds {rows_now} rows after loading, expected {len(chunks)}")
        hits = client.search(
            name,
            [first_vector],
            anns_field=VECTOR_FIELD,
            limit=1,
            search_params={"params": dict(spec.search_params)},
            output_fields=[TEXT_FIELD],
        )
        if not hits or not hits[0]:
            raise KbError(f"{name} is loaded but a search returned nothing")
        log.info("verified %s: %d rows, index built, loaded, searchable", name, rows_now)
        verdict = judge(name, state.target) if judge is not None else None
        if verdict is not None and not verdict.promote:
            _drop_unfinished(client, alias, name, "rejected by the quality gate")
            return IngestResult(name, len(chunks), False, state.target, cleaned, [], verdict)
        if before_promote is not None:
            before_promote(name)
        _promote(client, alias, name, state)
    except BaseException:
        _drop_unfinished(client, alias, name)
        raise
    log.info("alias %s -> %s (was %s)", alias, name, state.target or "none")
    retired = _retire(client, alias, retention)
    return IngestResult(name, len(chunks), False, state.target, cleaned, retired, verdict)


def _drop_unfinished(
    client: MilvusClient, alias: str, name: str, why: str = "this run did not finish"
) -> None:
    """Best-effort removal of this run's version; what stays is still ``building``, so the next run's
    leftover cleanup drops it."""
    try:
        if alias_target(client, alias) == name:
            return
        log.info("dropping %s: %s", name, why)
        client.drop_collection(name)
    except (MilvusException, OSError) as exc:
        log.warning("could not drop %s (%s); the next ingest drops it", name, exc)


def _promote(client: MilvusClient, alias: str, name: str, state: AliasState) -> None:
    """Point the alias at ``name``: one atomic ``alter_alias`` when it exists."""
    if state.target is not None:
        client.alter_alias(name, alias)
    else:
        if state.plain:
            recheck = inspect_alias(client, alias)
            _check_plain(alias, recheck)
            log.info("dropping the empty collection %s so the alias can take its name", alias)
            client.drop_collection(alias)
        client.create_alias(name, alias)
    _set_state(client, name, lifecycle.STATE_PROMOTED)


def _retire(client: MilvusClient, alias: str, retention: int) -> list[str]:
    target = alias_target(client, alias)
    retired = []
    for old in lifecycle.to_retire(list_versions(client, alias), target, retention):
        log.info("dropping %s: beyond the %d kept versions", old.name, retention)
        _drop(client, old.name, alias)
        retired.append(old.name)
    return retired


def rollback(client: MilvusClient, alias: str, to: int | None = None) -> tuple[str, str]:
    """Point the alias at the previous promoted version (or version ``to``); returns (from, to)."""
    target = alias_target(client, alias)
    chosen = lifecycle.rollback_target(list_versions(client, alias), target, to)
    if client.get_load_state(chosen.name).get("state") != LoadState.Loaded:
        client.load_collection(chosen.name)
    client.alter_alias(chosen.name, alias)
    log.info("alias %s -> %s (was %s)", alias, chosen.name, target)
    return str(target), chosen.name


@dataclass(frozen=True)
class KbStatus:
    alias: str
    target: str | None
    plain: bool
    plain_rows: int | None
    versions: list[Version]


def status(client: MilvusClient, alias: str) -> KbStatus:
    state = inspect_alias(client, alias)
    versions = list_versions(client, alias, with_rows=True)
    return KbStatus(alias, state.target, state.plain, state.plain_rows, versions)
