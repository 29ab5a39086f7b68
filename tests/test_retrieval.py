"""Collection management (phoenix_operator.clients.milvus) against a real Milvus Lite server.

The invariant under test beyond "creates what is missing": a collection that differs from the
spec is reported and left exactly as it was: no drop, no recreate, no re-index, rows intact.
"""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from pymilvus import DataType, MilvusClient
from pymilvus.client.types import LoadState
from pymilvus.exceptions import MilvusException
from pytest_mock import MockerFixture

from phoenix_operator.api.models import CollectionSpec, IndexSpec, SecretKeyRef
from phoenix_operator.clients.milvus import (
    TEXT_FIELD,
    VECTOR_FIELD,
    TokenSecretError,
    ensure_collection,
    resolve_token,
)
from phoenix_operator.local._proc import free_port
from phoenix_operator.local.milvus import LocalMilvus

DIM = 8
CREATED = ["created collection", "created index", "loaded"]


def spec_for(name: str, **overrides: Any) -> CollectionSpec:
    return CollectionSpec(name=name, dimension=overrides.pop("dimension", DIM), **overrides)


def insert_rows(client: MilvusClient, name: str, n: int, dim: int = DIM) -> None:
    rng = random.Random(n)
    rows = [{VECTOR_FIELD: [rng.random() for _ in range(dim)], TEXT_FIELD: f"doc {i}"} for i in range(n)]
    client.insert(name, rows, timeout=10)
    client.flush(name, timeout=10)


def count(client: MilvusClient, name: str) -> int:
    return int(client.query(name, filter="", output_fields=["count(*)"], timeout=10)[0]["count(*)"])


def user_collection(client: MilvusClient, name: str, dim: int, index: tuple[str, str] | None) -> None:
    """A collection created outside Phoenix (Phoenix's field names), optionally indexed."""
    schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=True)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field(TEXT_FIELD, DataType.VARCHAR, max_length=1024)
    client.create_collection(name, schema=schema, timeout=10)
    if index is not None:
        params = client.prepare_index_params()
        params.add_index(field_name=VECTOR_FIELD, index_type=index[0], metric_type=index[1], params={})
        client.create_index(name, params, timeout=10, sync=False)


@pytest.mark.milvus
class TestEnsureCollection:
    def test_creates_indexes_and_loads_then_is_idempotent(
        self, milvus_server: LocalMilvus, collection_name: str
    ) -> None:
        spec = spec_for(collection_name)
        first = ensure_collection(milvus_server.uri, None, "default", spec)
        assert (first.ready, first.reason, first.actions) == (True, "Created", CREATED), first.message
        assert first.status.collection == collection_name
        assert first.status.row_count == 0
        assert (first.status.index_type, first.status.index_state, first.status.loaded) == (
            "HNSW",
            "Finished",
            True,
        )
        assert first.status.endpoint is None

        second = ensure_collection(milvus_server.uri, None, "default", spec)
        assert (second.ready, second.reason, second.actions) == (True, "CollectionReady", []), second.message
        assert second.status == first.status

    def test_reports_row_count(
        self, milvus_server: LocalMilvus, milvus_client: MilvusClient, collection_name: str
    ) -> None:
        spec = spec_for(collection_name)
        assert ensure_collection(milvus_server.uri, None, "default", spec).ready
        insert_rows(milvus_client, collection_name, 37)
        report = ensure_collection(milvus_server.uri, None, "default", spec)
        assert (report.ready, report.actions, report.status.row_count) == (True, [], 37)
        assert "37 rows" in report.message

    def test_loads_a_released_collection(
        self, milvus_server: LocalMilvus, milvus_client: MilvusClient, collection_name: str
    ) -> None:
        spec = spec_for(collection_name)
        ensure_collection(milvus_server.uri, None, "default", spec)
        milvus_client.release_collection(collection_name, timeout=10)
        report = ensure_collection(milvus_server.uri, None, "default", spec)
        assert (report.ready, report.actions, report.status.loaded) == (True, ["loaded"], True), (
            report.message
        )

    def test_indexes_an_existing_unindexed_collection_keeping_rows(
        self, milvus_server: LocalMilvus, milvus_client: MilvusClient, collection_name: str
    ) -> None:
        user_collection(milvus_client, collection_name, DIM, index=None)
        insert_rows(milvus_client, collection_name, 12)
        report = ensure_collection(milvus_server.uri, None, "default", spec_for(collection_name))
        assert report.ready, report.message
        assert report.reason == "CollectionReady"
        assert "created collection" not in report.actions
        assert "created index" in report.actions
        assert (report.status.index_type, report.status.row_count) == ("HNSW", 12)
        assert count(milvus_client, collection_name) == 12

    def test_dimension_mismatch_is_reported_and_data_kept(
        self, milvus_server: LocalMilvus, milvus_client: MilvusClient, collection_name: str
    ) -> None:
        user_collection(milvus_client, collection_name, 4, index=("HNSW", "COSINE"))
        insert_rows(milvus_client, collection_name, 10, dim=4)
        before = milvus_client.describe_collection(collection_name, timeout=10)

        report = ensure_collection(
            milvus_server.uri, None, "default", spec_for(collection_name, dimension=16)
        )
        assert (report.ready, report.reason, report.actions) == (False, "DimensionMismatch", [])
        assert "4-dimensional" in report.message and "16" in report.message
        assert report.status.row_count == 10
        assert milvus_client.describe_collection(collection_name, timeout=10) == before
        assert count(milvus_client, collection_name) == 10

    @pytest.mark.parametrize(
        ("live", "spec_kwargs", "reason"),
        [
            (("FLAT", "COSINE"), {"index": IndexSpec(type="HNSW")}, "IndexMismatch"),
            (("HNSW", "L2"), {"metric": "COSINE"}, "MetricMismatch"),
        ],
    )
    def test_index_or_metric_mismatch_is_not_rebuilt(
        self,
        milvus_server: LocalMilvus,
        milvus_client: MilvusClient,
        collection_name: str,
        live: tuple[str, str],
        spec_kwargs: dict[str, Any],
        reason: str,
    ) -> None:
        user_collection(milvus_client, collection_name, DIM, index=live)
        insert_rows(milvus_client, collection_name, 5)
        report = ensure_collection(
            milvus_server.uri, None, "default", spec_for(collection_name, **spec_kwargs)
        )
        assert (report.ready, report.reason, report.actions) == (False, reason, []), report.message
        assert report.status.index_type == live[0]
        index = milvus_client.describe_index(collection_name, VECTOR_FIELD, timeout=10)
        assert (index["index_type"], index["metric_type"]) == live
        assert count(milvus_client, collection_name) == 5

    def test_missing_vector_field_is_a_schema_mismatch(
        self, milvus_server: LocalMilvus, milvus_client: MilvusClient, collection_name: str
    ) -> None:
        milvus_client.create_collection(collection_name, dimension=DIM, timeout=10)  # field "vector"
        report = ensure_collection(milvus_server.uri, None, "default", spec_for(collection_name))
        assert (report.ready, report.reason, report.actions) == (False, "SchemaMismatch", [])
        assert "'embedding'" in report.message and "vector" in report.message
        assert milvus_client.has_collection(collection_name, timeout=10)

    def test_unknown_database(self, milvus_server: LocalMilvus, collection_name: str) -> None:
        report = ensure_collection(milvus_server.uri, None, "no_such_db", spec_for(collection_name))
        assert (report.ready, report.reason, report.actions) == (False, "DatabaseNotFound", [])
        assert "dbName" in report.message

    def test_unreachable_milvus_is_reported_within_the_timeout(self, collection_name: str) -> None:
        uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        started = time.monotonic()
        report = ensure_collection(uri, "root:Milvus", "default", spec_for(collection_name), timeout_s=3)
        assert time.monotonic() - started < 3
        assert (report.ready, report.reason, report.actions) == (False, "MilvusUnreachable", [])
        assert uri in report.message
        assert report.status.collection == collection_name and report.status.row_count is None

    def test_a_server_that_is_stopping_is_unreachable(self, tmp_path: Path, collection_name: str) -> None:
        """A Milvus Lite that is shutting down closes its database while its gRPC server still
        answers the calls in flight; those answers say the server is going, not that the request
        was refused. The server runs in-process so the test can hold it in that state."""
        from milvus_lite.adapter.grpc.server import start_server_in_thread

        server, db, port = start_server_in_thread(str(tmp_path / "lite"))
        uri = f"http://127.0.0.1:{port}"
        try:
            assert ensure_collection(uri, None, "default", spec_for(collection_name)).ready
            db.close()
            report = ensure_collection(uri, None, "default", spec_for(collection_name))
        finally:
            server.stop(grace=1)
        assert (report.ready, report.reason) == (False, "MilvusUnreachable"), report.message
        assert "closed" in report.message

    @pytest.mark.parametrize(
        ("status", "unreachable"),
        [
            ({"code": 1, "retriable": True, "reason": "service not ready[Stopping]"}, True),
            ({"code": 1, "retriable": True, "reason": "node not healthy"}, True),
            ({"code": 1, "error_code": 1, "reason": "collection kb already exists"}, False),
            ({"code": 8, "retriable": True, "reason": "rate limit exceeded"}, False),
        ],
    )
    def test_which_answers_of_a_real_milvus_mean_it_is_not_serving(
        self, status: dict[str, Any], unreachable: bool
    ) -> None:
        """Stand-in: no full Milvus runs here, so the Status protos it sends while starting or
        stopping (and two refusals that must stay errors) go through pymilvus's own conversion."""
        from pymilvus.grpc_gen import common_pb2

        from phoenix_operator.clients.milvus import _unreachable

        assert _unreachable(MilvusException.from_status(common_pb2.Status(**status))) is unreachable

    def test_hung_endpoint_is_reported_within_the_timeout(self, collection_name: str) -> None:
        """A port that accepts TCP but never speaks gRPC (a wedged Milvus) must not block the loop."""
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
            started = time.monotonic()
            report = ensure_collection(uri, None, "default", spec_for(collection_name), timeout_s=1.5)
            elapsed = time.monotonic() - started
        assert (report.ready, report.reason) == (False, "MilvusUnreachable")
        assert elapsed < 3, elapsed

    # Milvus Lite builds indexes and loads synchronously, so these two states are injected on top of
    # a real collection: only the one pymilvus call that would report them is replaced.

    def test_failed_index_build_is_reported(
        self, milvus_server: LocalMilvus, collection_name: str, mocker: MockerFixture
    ) -> None:
        spec = spec_for(collection_name)
        ensure_collection(milvus_server.uri, None, "default", spec)
        failed = {
            "index_type": "HNSW",
            "metric_type": "COSINE",
            "state": "Failed",
            "index_state_fail_reason": "oom",
        }
        mocker.patch.object(MilvusClient, "describe_index", return_value=failed)
        report = ensure_collection(milvus_server.uri, None, "default", spec)
        assert (report.ready, report.reason, report.actions) == (False, "IndexFailed", [])
        assert "oom" in report.message and report.status.index_state == "Failed"

    def test_slow_load_is_reported_as_loading(
        self,
        milvus_server: LocalMilvus,
        milvus_client: MilvusClient,
        collection_name: str,
        mocker: MockerFixture,
    ) -> None:
        spec = spec_for(collection_name)
        ensure_collection(milvus_server.uri, None, "default", spec)
        milvus_client.release_collection(collection_name, timeout=10)
        mocker.patch.object(
            MilvusClient,
            "load_collection",
            side_effect=MilvusException(message="wait for loading collection timeout"),
        )
        states = [{"state": LoadState.NotLoad}, {"state": LoadState.Loading, "progress": 40}]
        mocker.patch.object(MilvusClient, "get_load_state", side_effect=states)
        report = ensure_collection(milvus_server.uri, None, "default", spec)
        assert (report.ready, report.reason, report.actions) == (False, "Loading", [])
        assert "40% done" in report.message


@pytest.mark.milvus
def test_restart_keeps_rows_and_collection_is_reloaded(tmp_path: Path) -> None:
    """A Milvus Lite restart keeps data but forgets load state; the next reconcile loads again."""
    spec = spec_for("kb")
    with LocalMilvus(tmp_path / "milvus") as server:
        assert ensure_collection(server.uri, None, "default", spec).actions == CREATED
        client = MilvusClient(server.uri, timeout=10)
        try:
            insert_rows(client, "kb", 9)
        finally:
            client.close()
        server.stop()
        server.start()
        report = ensure_collection(server.uri, None, "default", spec)
    assert (report.ready, report.actions, report.status.row_count) == (True, ["loaded"], 9), report.message
    assert not server.running()


# ---------------------------------------------------------------------------------- tokens


REF = SecretKeyRef(name="milvus-auth", key="token")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"token": "root:Milvus"}, "root:Milvus"),
        ({"token": b"root:Milvus\n"}, "root:Milvus"),
        ({"token": "  api-key \n", "other": "x"}, "api-key"),
    ],
)
def test_resolve_token(data: dict[str, bytes | str], expected: str) -> None:
    assert resolve_token(data, REF) == expected


def test_resolve_token_without_ref_is_none() -> None:
    assert resolve_token({"token": "ignored"}, None) is None
    assert resolve_token(None, None) is None


@pytest.mark.parametrize(
    ("data", "reason", "text"),
    [
        (None, "SecretNotFound", "does not exist"),
        ({"password": "x"}, "SecretKeyNotFound", "keys: password"),
        ({"token": " \n"}, "SecretValueInvalid", "empty"),
        ({"token": b"\xff\xfe"}, "SecretValueInvalid", "UTF-8"),
    ],
)
def test_resolve_token_errors(data: dict[str, bytes | str] | None, reason: str, text: str) -> None:
    with pytest.raises(TokenSecretError) as info:
        resolve_token(data, REF)
    assert info.value.reason == reason
    assert text in str(info.value) and "milvus-auth" in str(info.value)
