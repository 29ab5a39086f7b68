"""Milvus collection management for the retrieval layer (pymilvus; no Kubernetes in here).

An existing collection is never dropped or re-indexed (it holds user data), and errors come back in
the report, never as exceptions, so one unreachable Milvus cannot wedge the reconcile loop. Details:
docs/operator.md, "Children" ("The Milvus collection").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import grpc
from pymilvus import DataType, MilvusClient
from pymilvus.client.types import LoadState, Status
from pymilvus.exceptions import ConnectError, ErrorCode, MilvusException, MilvusUnavailableException

from phoenix_operator.api.models import CollectionSpec, RetrievalStatus
from phoenix_operator.render.secrets import TokenSecretError, resolve_token

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The schema Phoenix creates; clients (ingestion jobs, the chatbot) rely on these field names.
PRIMARY_FIELD = "id"
VECTOR_FIELD = "embedding"
TEXT_FIELD = "text"
TEXT_MAX_LENGTH = 65535

#: Each RPC gets at least this long, even when the overall budget is nearly spent.
MIN_CALL_TIMEOUT_S = 0.5

#: What pymilvus raises: its own exceptions, plus raw gRPC/socket errors on some transport paths.
_MILVUS_ERRORS: tuple[type[BaseException], ...] = (
    MilvusException,
    grpc.RpcError,
    grpc.FutureTimeoutError,
    OSError,
)
#: The client constructor also raises ValueError for a malformed URI (e.g. a port out of range).
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*_MILVUS_ERRORS, ValueError)
#: A row count is informational: an odd answer must not turn a healthy collection into an error.
_COUNT_ERRORS: tuple[type[BaseException], ...] = (
    *_MILVUS_ERRORS,
    KeyError,
    IndexError,
    TypeError,
    ValueError,
)


class Reason(StrEnum):
    """CamelCase condition reasons of the RetrievalReady condition."""

    COLLECTION_READY = "CollectionReady"
    CREATED = "Created"
    MILVUS_UNREACHABLE = "MilvusUnreachable"
    DATABASE_NOT_FOUND = "DatabaseNotFound"
    SCHEMA_MISMATCH = "SchemaMismatch"
    DIMENSION_MISMATCH = "DimensionMismatch"
    INDEX_MISMATCH = "IndexMismatch"
    METRIC_MISMATCH = "MetricMismatch"
    CREATE_FAILED = "CreateFailed"
    INDEX_CREATE_FAILED = "IndexCreateFailed"
    INDEX_FAILED = "IndexFailed"
    LOADING = "Loading"
    LOAD_FAILED = "LoadFailed"
    MILVUS_ERROR = "MilvusError"


@dataclass(frozen=True)
class CollectionReport:
    """Outcome of one ``ensure_collection`` call.

    ``status`` leaves ``endpoint`` unset (the caller knows which address it published);
    ``actions`` lists what this call changed, in order ("created collection", "created index",
    "loaded"), and is empty when the collection was already as specified.
    """

    ready: bool
    reason: str
    message: str
    status: RetrievalStatus
    actions: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# collection


class _Budget:
    """One deadline shared by all RPCs of a call, so N steps cannot take N × timeout."""

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s

    def left(self) -> float:
        return max(self.deadline - time.monotonic(), MIN_CALL_TIMEOUT_S)


class _Stop(Exception):
    """Ends a reconcile early with a not-ready reason (internal)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, MilvusException):
        return f"{exc.message} (code {exc.code})"
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else None
        return f"{details or 'gRPC error'} ({code})"
    return str(exc) or type(exc).__name__


def _client_uri(uri: str) -> str:
    """pymilvus rejects ``grpc://`` (which the API accepts); it means plain gRPC, i.e. ``http://``."""
    return "http://" + uri[len("grpc://") :] if uri.startswith("grpc://") else uri


def ensure_collection(
    uri: str, token: str | None, db_name: str, spec: CollectionSpec, timeout_s: float = 10
) -> CollectionReport:
    """Create/index/load the collection when needed and report its state; never raises for Milvus errors."""
    budget = _Budget(timeout_s)
    actions: list[str] = []
    observed: dict[str, Any] = {"collection": spec.name}

    def report(ready: bool, reason: Reason, message: str) -> CollectionReport:
        return CollectionReport(ready, str(reason), message, RetrievalStatus(**observed), list(actions))

    try:
        client = MilvusClient(uri=_client_uri(uri), token=token or "", db_name=db_name, timeout=budget.left())
    except _CONNECT_ERRORS as exc:
        return report(
            False,
            Reason.MILVUS_UNREACHABLE,
            f"cannot connect to Milvus at {uri}: {_error_text(exc)}. Check that Milvus is running, "
            "that the URI points at its gRPC port (19530 by default) and is reachable from the operator.",
        )
    try:
        ready_reason = _converge(client, spec, budget, actions, observed)
    except _Stop as stop:
        return report(False, stop.reason, stop.message)
    finally:
        client.close()
    return report(True, ready_reason, _ready_message(spec, observed))


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says Milvus could not be reached (down, restarting, partitioned), not that
    it refused: the client connects lazily, so a Milvus that went away fails the first call."""
    if isinstance(exc, MilvusUnavailableException | ConnectError | ConnectionError):
        return True
    if isinstance(exc, MilvusException) and (exc.code == Status.CONNECT_FAILED or _not_serving(exc)):
        return True
    if exc.__cause__ is not None and exc.__cause__ is not exc:
        return _unreachable(exc.__cause__)
    code = exc.code() if isinstance(exc, grpc.RpcError) and hasattr(exc, "code") else None
    return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or isinstance(
        exc, grpc.FutureTimeoutError
    )


#: What a server answers to a call it took in while starting or stopping: Milvus's "service not
#: ready", and Milvus Lite's closed database (it closes it while its gRPC server still finishes
#: the calls in flight).
_NOT_SERVING_MESSAGES = ("service not ready", "milvuslite is closed")


def _not_serving(exc: MilvusException) -> bool:
    """Whether Milvus answered that it is starting or stopping rather than refusing the call.

    Both answers carry code 1, which is also Milvus Lite's code for refusals such as "collection
    already exists"; of the code-1 answers Milvus marks only "service not ready" retriable. For the
    user a server that is going or not yet there is unreachable: same reason, same alerts.
    """
    if exc.code != ErrorCode.UNEXPECTED_ERROR:
        return False
    return exc.retriable or any(text in str(exc.message).lower() for text in _NOT_SERVING_MESSAGES)


def _call(reason: Reason, doing: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one pymilvus call; a Milvus error becomes ``_Stop(reason)`` naming what was being done."""
    try:
        return fn(*args, **kwargs)
    except _MILVUS_ERRORS as exc:
        if _unreachable(exc):
            reason = Reason.MILVUS_UNREACHABLE
        raise _Stop(reason, f"Milvus failed while {doing}: {_error_text(exc)}") from exc


def _converge(
    client: MilvusClient,
    spec: CollectionSpec,
    budget: _Budget,
    actions: list[str],
    observed: dict[str, Any],
) -> Reason:
    name = spec.name
    try:
        exists = client.has_collection(name, timeout=budget.left())
    except _MILVUS_ERRORS as exc:
        text = _error_text(exc)
        if "database" in text.lower() and ("not exist" in text.lower() or "not found" in text.lower()):
            raise _Stop(
                Reason.DATABASE_NOT_FOUND,
                f"Milvus has no such database: {text}. Create the database or fix "
                "retrieval.milvus.external.dbName.",
            ) from exc
        reason = Reason.MILVUS_UNREACHABLE if _unreachable(exc) else Reason.MILVUS_ERROR
        raise _Stop(reason, f"Milvus failed while looking up collection {name}: {text}") from exc

    if not exists:
        _call(
            Reason.CREATE_FAILED,
            f"creating collection {name}",
            client.create_collection,
            name,
            schema=_schema(spec),
            timeout=budget.left(),
        )
        actions.append("created collection")

    described = _call(
        Reason.MILVUS_ERROR,
        f"describing collection {name}",
        client.describe_collection,
        name,
        timeout=budget.left(),
    )
    index = _vector_index(client, name, budget, observed)
    loaded = _is_loaded(client, name, budget)
    observed["loaded"] = loaded

    problems = _mismatches(spec, described, index)
    if problems:
        observed["row_count"] = _row_count(client, name, loaded, budget)
        rows = observed["row_count"]
        held = f"{rows} rows" if rows is not None else "its data"
        reason = problems[0][0]
        message = (
            "; ".join(text for _, text in problems)
            + f". Phoenix never drops, recreates or re-indexes an existing collection ({name} holds {held}), "
            "so it is left as it is: change the spec to match it, point retrieval.collection.name at a new "
            "collection, or change the collection yourself."
        )
        raise _Stop(reason, message)

    if index is None:
        _call(
            Reason.INDEX_CREATE_FAILED,
            f"creating the {spec.index.type} index on {name}.{VECTOR_FIELD}",
            client.create_index,
            name,
            index_params(client, spec),
            timeout=budget.left(),
            # Do not wait for the build: pymilvus's wait loop ignores float timeouts (it checks
            # isinstance(timeout, int)) and a large collection can take minutes. The state is
            # read back below and reported; a build still running shows as index_state InProgress.
            sync=False,
        )
        actions.append("created index")
        index = _vector_index(client, name, budget, observed)

    if index is not None and str(index.get("state", "")).lower() == "failed":
        why = index.get("index_state_fail_reason") or "no reason given"
        raise _Stop(
            Reason.INDEX_FAILED,
            f"building the {observed.get('index_type')} index on {name}.{VECTOR_FIELD} failed: {why}. "
            "Check retrieval.collection.index.params; Phoenix does not drop the failed index itself.",
        )

    # A collection created just now is loaded even if it reports Loaded: Milvus Lite auto-loads a
    # collection at creation (before it had an index), and the load must carry spec.replicas.
    if not loaded or "created collection" in actions:
        _load(client, spec, budget)
        actions.append("loaded")
        observed["loaded"] = loaded = True

    observed["row_count"] = _row_count(client, name, loaded, budget)
    return Reason.CREATED if "created collection" in actions else Reason.COLLECTION_READY


def _schema(spec: CollectionSpec) -> Any:
    schema = MilvusClient.create_schema(
        auto_id=True, enable_dynamic_field=True, description="knowledge base managed by Phoenix"
    )
    schema.add_field(PRIMARY_FIELD, DataType.INT64, is_primary=True)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=spec.dimension)
    schema.add_field(TEXT_FIELD, DataType.VARCHAR, max_length=TEXT_MAX_LENGTH)
    return schema


def index_params(client: MilvusClient, spec: CollectionSpec) -> Any:
    """The spec's vector index on the embedding field (also used by ``phoenix kb ingest``)."""
    params = client.prepare_index_params()
    params.add_index(
        field_name=VECTOR_FIELD,
        index_type=str(spec.index.type),
        metric_type=str(spec.metric),
        params=dict(spec.index.params),
    )
    return params


def _vector_index(
    client: MilvusClient, name: str, budget: _Budget, observed: dict[str, Any]
) -> dict[str, Any] | None:
    """The index on the vector field (``describe_index`` output, also noted in ``observed``) or None."""
    names = _call(
        Reason.MILVUS_ERROR,
        f"listing the indexes of {name}",
        client.list_indexes,
        name,
        field_name=VECTOR_FIELD,
        timeout=budget.left(),
    )
    if not names:
        return None
    described = _call(
        Reason.MILVUS_ERROR,
        f"describing index {names[0]} of {name}",
        client.describe_index,
        name,
        index_name=names[0],
        timeout=budget.left(),
    )
    if not described:
        return None
    index = dict(described)
    observed["index_type"] = str(index.get("index_type") or "") or None
    observed["index_state"] = str(index.get("state") or "") or None
    return index


def _is_loaded(client: MilvusClient, name: str, budget: _Budget) -> bool:
    state = _call(
        Reason.MILVUS_ERROR,
        f"reading the load state of {name}",
        client.get_load_state,
        name,
        timeout=budget.left(),
    )
    return bool(state.get("state") == LoadState.Loaded)


def _mismatches(
    spec: CollectionSpec, described: Mapping[str, Any], index: Mapping[str, Any] | None
) -> list[tuple[Reason, str]]:
    """Differences between a live collection and the spec that only a rebuild could fix."""
    name = spec.name
    fields = {f.get("name"): f for f in described.get("fields", [])}
    vector = fields.get(VECTOR_FIELD)
    if vector is None or vector.get("type") != DataType.FLOAT_VECTOR:
        found = ", ".join(f"{n} ({f.get('type')!s})" for n, f in fields.items()) or "none"
        return [
            (
                Reason.SCHEMA_MISMATCH,
                f"collection {name} has no FLOAT_VECTOR field {VECTOR_FIELD!r} (fields: {found})",
            )
        ]
    problems: list[tuple[Reason, str]] = []
    dim = int((vector.get("params") or {}).get("dim", 0))
    if dim != spec.dimension:
        problems.append(
            (
                Reason.DIMENSION_MISMATCH,
                f"collection {name} stores {dim}-dimensional vectors but "
                f"retrieval.collection.dimension is {spec.dimension}",
            )
        )
    if index is not None:
        live_type = str(index.get("index_type", "")).upper()
        if live_type != str(spec.index.type):
            problems.append(
                (
                    Reason.INDEX_MISMATCH,
                    f"collection {name} has a {live_type or 'unknown'} index on {VECTOR_FIELD!r} but "
                    f"retrieval.collection.index.type is {spec.index.type}",
                )
            )
        live_metric = str(index.get("metric_type", "")).upper()
        if live_metric != str(spec.metric):
            problems.append(
                (
                    Reason.METRIC_MISMATCH,
                    f"collection {name} is indexed with metric {live_metric or 'unknown'} but "
                    f"retrieval.collection.metric is {spec.metric}",
                )
            )
    return problems


def _load(client: MilvusClient, spec: CollectionSpec, budget: _Budget) -> None:
    """Load and wait (within the budget); a load still running at the deadline is ``Loading``."""
    try:
        client.load_collection(spec.name, replica_number=spec.replicas, timeout=budget.left())
        return
    except _MILVUS_ERRORS as exc:
        error = _error_text(exc)
    try:
        state = client.get_load_state(spec.name, timeout=budget.left())
    except _MILVUS_ERRORS:
        state = {}
    if state.get("state") == LoadState.Loading:
        progress = state.get("progress")
        raise _Stop(
            Reason.LOADING,
            f"Milvus is still loading collection {spec.name}"
            + (f" ({progress}% done)" if progress is not None else "")
            + "; Phoenix checks again on the next reconcile.",
        )
    raise _Stop(
        Reason.LOAD_FAILED,
        f"Milvus failed to load collection {spec.name} with {spec.replicas} replica(s): {error}. "
        "Check the Milvus query nodes' memory and retrieval.collection.replicas.",
    )


def _row_count(client: MilvusClient, name: str, loaded: bool, budget: _Budget) -> int | None:
    """Rows in the collection, best effort (None if Milvus would not say).

    A loaded collection answers ``count(*)`` with strong consistency, unflushed rows included; an
    unloaded one (e.g. one we refuse to touch) only has its flushed-segment statistics.
    """
    try:
        if loaded:
            result = client.query(name, filter="", output_fields=["count(*)"], timeout=budget.left())
            return int(result[0]["count(*)"])
        stats = client.get_collection_stats(name, timeout=budget.left())
        return int(stats["row_count"])
    except _COUNT_ERRORS as exc:
        log.debug("row count of %s unavailable: %s", name, _error_text(exc))
        return None


def _ready_message(spec: CollectionSpec, observed: Mapping[str, Any]) -> str:
    rows = observed.get("row_count")
    rows_text = f"{rows} rows" if rows is not None else "row count unknown"
    state = observed.get("index_state")
    index_text = f"{observed.get('index_type')} index" + (f" ({state})" if state else "")
    return f"collection {spec.name} is loaded: {rows_text}, {index_text}, metric {spec.metric}"


__all__ = [
    "PRIMARY_FIELD",
    "TEXT_FIELD",
    "VECTOR_FIELD",
    "CollectionReport",
    "Reason",
    "TokenSecretError",
    "ensure_collection",
    "resolve_token",
]
