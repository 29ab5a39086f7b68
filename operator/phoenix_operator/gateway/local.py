"""Run the gateway stack on this machine: a knowledge base in Milvus, the gateway as a process.

Shared by the tests and ``phoenix bench gateway``: the knowledge base is BANKING77's training
texts embedded with the gateway's own embedder into the collection the retrieval reconciler
creates, and the gateway runs as ``python -m phoenix_operator.cli gateway``, exactly as the
operator's Deployment runs it.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from phoenix_operator.api.models import CollectionSpec, PhoenixDeploymentSpec
from phoenix_operator.local._proc import free_port, log_tail, stop_process, wait_for

#: Urgent intents of examples/production.yaml's route (the ones a bank must not queue).
URGENT_INTENTS = (
    "lost_or_stolen_card",
    "compromised_card",
    "card_swallowed",
    "lost_or_stolen_phone",
    "cash_withdrawal_not_recognised",
    "card_payment_not_recognised",
    "direct_debit_payment_not_recognised",
    "transaction_charged_twice",
    "wrong_amount_of_cash_received",
)


def banking77_rows(split: str, per_intent: int | None = None) -> list[tuple[str, str]]:
    """``(text, intent)`` rows of a shipped BANKING77 split, optionally the first N per intent."""
    from phoenix_operator.data import banking77

    taken: dict[str, int] = defaultdict(int)
    rows = []
    with banking77(split).open(newline="") as handle:
        for row in csv.DictReader(handle):
            if per_intent is not None and taken[row["category"]] >= per_intent:
                continue
            taken[row["category"]] += 1
            rows.append((row["text"], row["category"]))
    return rows


def ingest_passages(
    uri: str, collection: CollectionSpec, texts: Sequence[str], embedder: Any, *, batch_size: int = 256
) -> int:
    """Create the collection as the reconciler does (schema, index, load) and insert ``texts``."""
    from pymilvus import MilvusClient

    from phoenix_operator.clients.milvus import TEXT_FIELD, VECTOR_FIELD, ensure_collection

    report = ensure_collection(uri, None, "default", collection, timeout_s=30)
    if not report.ready:
        raise RuntimeError(f"collection {collection.name} not ready: {report.reason}: {report.message}")
    vectors = embedder.embed_batched(list(texts))
    client = MilvusClient(uri, timeout=30)
    try:
        for start in range(0, len(texts), batch_size):
            rows = [
                {VECTOR_FIELD: vectors[i].tolist(), TEXT_FIELD: texts[i]}
                for i in range(start, min(start + batch_size, len(texts)))
            ]
            client.insert(collection.name, rows)
        client.flush(collection.name)
    finally:
        client.close()
    return len(texts)


class GatewayProcess:
    """``phoenix gateway`` as a child process on a free loopback port; a context manager."""

    def __init__(
        self,
        spec: PhoenixDeploymentSpec,
        triton_url: str,
        *,
        milvus_uri: str | None = None,
        workdir: Path | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout_s: float = 120.0,
        env: dict[str, str] | None = None,
        cpus: set[int] | None = None,
    ) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="phoenix-gateway-"))
        self.spec_path = self.workdir / "spec.yaml"
        self.log_path = self.workdir / "gateway.log"
        self.spec = spec
        self.triton_url = triton_url
        self.milvus_uri = milvus_uri
        self.extra_args = list(extra_args)
        self.ready_timeout_s = ready_timeout_s
        self.env = env
        self.cpus = cpus
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._proc

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "phoenix_operator.cli", "gateway", "--spec", str(self.spec_path)]
        cmd += ["--triton-url", self.triton_url, "--port", str(self.port), "--host", "127.0.0.1"]
        if self.milvus_uri:
            cmd += ["--milvus-uri", self.milvus_uri]
        return cmd + self.extra_args

    def start(self) -> GatewayProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.spec_path.write_text(
            yaml.safe_dump(self.spec.model_dump(mode="json", by_alias=True, exclude_none=True))
        )
        self.port = free_port()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(self.env or {})},
                preexec_fn=self._pin if self.cpus else None,
            )
        try:
            wait_for(
                self._ready,
                self.ready_timeout_s,
                what=f"gateway ready on {self.url}",
                interval_s=0.2,
                abort=self._exited,
            )
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n--- {self.log_path} (tail) ---\n{log_tail(self.log_path)}") from None
        return self

    def _pin(self) -> None:
        """Runs in the child before exec: every thread it will create inherits the affinity."""
        assert self.cpus
        os.sched_setaffinity(0, self.cpus)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the gateway process (all threads), from /proc."""
        assert self._proc is not None
        fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def readiness(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def _ready(self) -> bool:
        try:
            return self.readiness()[0] == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _exited(self) -> str | None:
        if self._proc is not None and (code := self._proc.poll()) is not None:
            return f"gateway exited with code {code}"
        return None

    def terminate(self) -> None:
        """SIGTERM only (graceful shutdown); ``stop`` waits and cleans up."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    def stop(self, term_timeout_s: float = 30.0) -> int | None:
        if self._proc is None:
            return None
        code = stop_process(self._proc, term_timeout_s=term_timeout_s)
        self._proc = None
        return code

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def local_spec(
    *,
    collection: str = "support_articles",
    max_batch_size: int = 4,
    max_queue_delay_us: int = 0,
    bulk_queue_timeout_us: int = 30_000_000,
    allow_client_priority: bool = False,
    request_timeout_s: float = 120.0,
    max_body_bytes: int = 1_048_576,
    top_k: int = 4,
) -> PhoenixDeploymentSpec:
    """A spec shaped like examples/production.yaml (classes, urgent route, COSINE/HNSW collection)
    that runs on this machine: one CPU model instance, a small batch so load forms a queue."""
    return PhoenixDeploymentSpec.model_validate(
        {
            "model": {
                "name": "emulated_chat",
                "backend": "python",
                "maxBatchSize": max_batch_size,
                "repository": {"uri": "https://localhost/emulated_chat"},
            },
            "triton": {"gpusPerReplica": 0, "ttftBucketsMs": []},
            "batching": {
                "preferredBatchSizes": [max_batch_size],
                "maxQueueDelayMicroseconds": max_queue_delay_us,
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
                            "timeoutMicroseconds": bulk_queue_timeout_us,
                            "timeoutAction": "REJECT",
                        },
                    },
                ],
            },
            "gateway": {
                "topK": top_k,
                "allowClientPriority": allow_client_priority,
                "requestTimeoutSeconds": request_timeout_s,
                "maxBodyBytes": max_body_bytes,
                "routes": [
                    {"priorityClass": "urgent", "minConfidence": 0.2, "intents": list(URGENT_INTENTS)}
                ],
            },
            "retrieval": {
                "collection": {
                    "name": collection,
                    "dimension": 384,
                    "metric": "COSINE",
                    "index": {"type": "HNSW", "params": {"M": 16, "efConstruction": 200}},
                    "searchParams": {"ef": 64},
                }
            },
        }
    )
