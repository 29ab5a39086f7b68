"""The batching actuator against three real Triton servers with model control restricted by a key.

The three servers (CPU, the emulated-LLM Python backend) start together once for the module and
run with ``--http-restricted-api`` on model control and model config, as the operator runs them.
A rollout reloads all three at once under one deadline; a real failure on one of them (a model
source that no longer loads, a server frozen with SIGSTOP) rolls the others back to the config
they served before, verified by reading it back from each server.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.triton import TritonPool
from phoenix_operator.clients.triton import BATCHING_APPLIED, BatchingApplyResult, TritonModelControl
from phoenix_operator.local.models import EMULATED_LLM
from phoenix_operator.local.triton import LocalTriton
from phoenix_operator.render.secrets import TRITON_CONTROL_HEADER
from phoenix_operator.render.tritonconfig import BatchingConfig

pytestmark = pytest.mark.triton
KEY = "test-control-key-7f3a"


@dataclass
class Fleet:
    servers: list[LocalTriton]

    @property
    def endpoints(self) -> list[str]:
        return [s.http_url for s in self.servers]

    def control(self, timeout_s: float = 30.0, rollback_timeout_s: float | None = None) -> TritonModelControl:
        return TritonModelControl(timeout_s, rollback_timeout_s, control_key=KEY)

    def full_config(self) -> dict[str, object]:
        return self.control().current_config(self.endpoints[0], EMULATED_LLM)

    def served(self) -> dict[str, BatchingConfig | str]:
        return self.control(timeout_s=10).served_batching(self.endpoints, EMULATED_LLM)

    def config_with_delay(self, delay_us: int) -> str:
        """The full config the servers run, with another queue delay (Triton replaces, not merges)."""
        config = self.full_config()
        batcher = dict(config["dynamic_batching"])  # type: ignore[call-overload]
        batcher["max_queue_delay_microseconds"] = delay_us
        return json.dumps({**config, "dynamic_batching": batcher})

    def next_delay(self) -> int:
        """A queue delay none of the servers serves now, so every rollout really changes something."""
        served = [b.max_queue_delay_us for b in self.served().values() if isinstance(b, BatchingConfig)]
        return max(served, default=0) + 1000


@pytest.fixture(scope="module")
def fleet(module_triton_pool: TritonPool) -> Fleet:
    return Fleet(module_triton_pool.start_many(3, control_key=KEY))


@pytest.fixture
def consistent(fleet: Fleet) -> Iterator[BatchingConfig]:
    """All three serve the same batching before a test (a previous test may have left it mixed)."""
    before = fleet.served()
    if len(set(before.values())) != 1:
        fleet.control(timeout_s=60).apply(fleet.endpoints, EMULATED_LLM, fleet.config_with_delay(500))
    served = fleet.served()
    assert len(set(served.values())) == 1, served
    first = next(iter(served.values()))
    assert isinstance(first, BatchingConfig)
    yield first


def test_all_endpoints_reload_in_parallel_under_one_deadline(
    fleet: Fleet, consistent: BatchingConfig
) -> None:
    control = fleet.control(timeout_s=60)
    # One endpoint after another: what a sequential rollout costs.
    sequential = []
    for endpoint in fleet.endpoints:
        delay = fleet.next_delay()
        began = time.monotonic()
        one = control.apply([endpoint], EMULATED_LLM, fleet.config_with_delay(delay))
        sequential.append(time.monotonic() - began)
        assert one.applied, one.describe()
    delay = fleet.next_delay()
    began = time.monotonic()
    result = control.apply(fleet.endpoints, EMULATED_LLM, fleet.config_with_delay(delay))
    parallel_s = time.monotonic() - began
    assert result.applied, result.describe()
    assert result.reason == "Applied" and result.condition()["status"] == "True"
    assert {r.endpoint for r in result.results} == set(fleet.endpoints)
    served = fleet.served()
    assert all(isinstance(b, BatchingConfig) and b.max_queue_delay_us == delay for b in served.values()), (
        served
    )
    print(
        f"\nreload of 3 Triton endpoints: sequential {sum(sequential):.2f} s "
        f"({', '.join(f'{s:.2f}' for s in sequential)}), parallel {parallel_s:.2f} s"
    )
    # Three reloads at once cost far less than three in a row (two shared cores: not one).
    assert parallel_s < 0.75 * sum(sequential), (parallel_s, sequential)


BROKEN_MODEL = 'raise RuntimeError("this model source is broken on purpose")\n'


def test_a_failing_endpoint_rolls_every_other_back_and_says_so(
    fleet: Fleet, consistent: BatchingConfig
) -> None:
    broken = fleet.servers[2]
    model_py = broken.model_repository / EMULATED_LLM / "1" / "model.py"
    source = model_py.read_text()
    model_py.write_text(BROKEN_MODEL)  # its next (re)load fails inside Triton
    try:
        result = fleet.control(timeout_s=60).apply(
            fleet.endpoints, EMULATED_LLM, fleet.config_with_delay(fleet.next_delay())
        )
    finally:
        model_py.write_text(source)
    assert not result.applied
    failed = {r.endpoint: r for r in result.failed}
    assert list(failed) == [broken.http_url]
    print(f"\nbroken endpoint: {failed[broken.http_url].error}\n{result.describe()}")
    assert "broken on purpose" in str(failed[broken.http_url].error)
    # Triton kept the old version where the load failed; the others were reloaded and put back.
    assert failed[broken.http_url].rollback == "unchanged"
    assert sorted(result.rolled_back) == sorted(fleet.endpoints[:2])
    assert result.rollback_complete and result.reason == "RolledBack"
    assert fleet.served() == dict.fromkeys(fleet.endpoints, consistent)
    condition = result.condition()
    assert condition["type"] == BATCHING_APPLIED and condition["status"] == "False"
    assert condition["reason"] == "RolledBack"
    assert broken.http_url in condition["message"]
    assert all(e in condition["message"] for e in fleet.endpoints[:2])


def _wait_stopped(pid: int, timeout_s: float = 10.0) -> None:
    """Until every thread of ``pid`` is stopped: a loaded machine may schedule the stop late."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = {
            (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            for task in Path(f"/proc/{pid}/task").iterdir()
        }
        if states <= {"T", "t"}:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop within {timeout_s} s: {states}")


def test_the_deadline_holds_when_an_endpoint_hangs(fleet: Fleet, consistent: BatchingConfig) -> None:
    hung = fleet.servers[1]
    assert hung.pid is not None
    config = fleet.config_with_delay(fleet.next_delay())
    control = fleet.control(timeout_s=8, rollback_timeout_s=8)
    os.kill(hung.pid, signal.SIGSTOP)
    try:
        _wait_stopped(hung.pid)
        began = time.monotonic()
        result = control.apply(fleet.endpoints, EMULATED_LLM, config)
        elapsed = time.monotonic() - began
    finally:
        os.kill(hung.pid, signal.SIGCONT)
    print(f"\nrollout with one hung endpoint: {elapsed:.2f} s (apply {result.apply_s:.2f} s)")
    assert result.apply_s < 8 + 1.0
    assert elapsed < 8 + 8 + 2.0
    failed = {r.endpoint: r for r in result.failed}
    assert list(failed) == [hung.http_url]
    assert "no answer within 8 s" in str(failed[hung.http_url].error)
    # It never got the new config (its config could not even be read): nothing to roll back there.
    assert failed[hung.http_url].rollback is None
    others = [e for e in fleet.endpoints if e != hung.http_url]
    assert sorted(result.rolled_back) == sorted(others)
    assert result.reason == "RolledBack"
    assert fleet.served() == dict.fromkeys(fleet.endpoints, consistent)


def test_model_control_needs_the_key(fleet: Fleet, consistent: BatchingConfig) -> None:
    endpoint = fleet.endpoints[0]
    load = f"http://{endpoint}/v2/repository/models/{EMULATED_LLM}/load"
    config = f"http://{endpoint}/v2/models/{EMULATED_LLM}/config"

    def call(url: str, headers: dict[str, str]) -> int:
        data = b"{}" if url == load else None
        request = urllib.request.Request(url, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            body = exc.read().decode()
            assert TRITON_CONTROL_HEADER in body, body
            return exc.code

    assert call(load, {}) == 403
    assert call(load, {TRITON_CONTROL_HEADER: "wrong"}) == 403
    assert call(config, {}) == 403
    assert call(config, {TRITON_CONTROL_HEADER: KEY}) == 200

    keyless: BatchingApplyResult = TritonModelControl(timeout_s=10).apply(
        fleet.endpoints, EMULATED_LLM, fleet.config_with_delay(fleet.next_delay())
    )
    assert not keyless.applied and keyless.reason == "NotApplied"
    assert all("403" in str(r.error) for r in keyless.results), keyless.describe()
    assert not keyless.rolled_back  # refused before any load: nothing changed
    assert fleet.served() == dict.fromkeys(fleet.endpoints, consistent)

    # Inference and health stay open: the gateway needs no key.
    with urllib.request.urlopen(f"http://{endpoint}/v2/health/ready", timeout=10) as response:
        assert response.status == 200


def test_restricted_args_match_what_triton_accepts(fleet: Fleet) -> None:
    server = fleet.servers[0]
    assert server.control_key == KEY
    command = server.command(Path("/tree"))
    assert (
        f"--http-restricted-api=model-repository,model-config,shared-memory,trace,logging:"
        f"{TRITON_CONTROL_HEADER}={KEY}" in command
    )
    assert any(arg.startswith("--grpc-restricted-protocol=") for arg in command)
