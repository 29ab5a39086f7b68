"""`phoenix demo`: the twin's Triton API, time scaling, the spec adjustments, the report,
and one short end-to-end run against the real parts.

The unit tests need no cluster and no server process (the HTTP tests bind a loopback port); the
integration test runs the whole `phoenix demo` as a subprocess — local cluster, Prometheus, Milvus
Lite, the operator, the twin — and reads back its summary JSON.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from phoenix_operator.api.models import PhoenixDeployment
from phoenix_operator.clients.triton import TritonModelControl
from phoenix_operator.cluster.manifests import kwok_stages_yaml
from phoenix_operator.demo.gateway_load import gateway_indices
from phoenix_operator.demo.report import (
    CONTROLLED,
    DemoRun,
    figures,
    load_run,
    save_run,
    scaling_actions,
    spans_from,
    timeline_from,
    windows_met,
)
from phoenix_operator.demo.requestpath import (
    Outcome,
    gateway_figures,
    gateway_live,
    parse_server_timing,
    twin_id_of,
)
from phoenix_operator.demo.spec import KWOK_READY_DELAY, adjust, find_example, load_documents
from phoenix_operator.demo.timescale import MIN_INTERVAL_S, TimeScale
from phoenix_operator.demo.triton_api import TritonControlServer
from phoenix_operator.demo.twin import DigitalTwin
from phoenix_operator.demo.view import ViewState, decision_text, plain_line, render
from phoenix_operator.demo.workload import (
    MAX_LEAD_IN_SHARE,
    RAMP_SHARE,
    demo_shape,
    demo_workload,
    lead_in,
    phase,
)
from phoenix_operator.render.tritonconfig import BatchingConfig, model_config_dict, to_load_json
from phoenix_operator.sim.cost import LLMEngineCost
from phoenix_operator.sim.fleet import FleetResult
from phoenix_operator.sim.modelconfig import ModelConfigError, batcher_from_model_config
from phoenix_operator.sim.profile import load_profile
from phoenix_operator.sim.request import Arrival, RequestRecord

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"urgent": 1, "standard": 2, "bulk": 3}
#: The short demo's share through the gateway (~4 chat requests per wall second at its peak).
GATEWAY_SHARE = 0.01


@pytest.fixture(scope="module")
def production() -> PhoenixDeployment:
    docs = [
        d for d in load_documents(ROOT / "examples" / "production.yaml") if d["kind"] == "PhoenixDeployment"
    ]
    return PhoenixDeployment.model_validate(docs[0])


@pytest.fixture()
def trace(tmp_path: Path) -> Path:
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    rows += [f"{i * 0.5:.1f},{200 + i % 50},{20 + i % 9}" for i in range(400)]  # 2 req/s for 200 s
    path = tmp_path / "trace.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def small_twin(production: PhoenixDeployment, speedup: float = 100.0, n: int = 200) -> DigitalTwin:
    arrivals = [
        Arrival(0.05 * i, priority=2, prompt_tokens=300, output_tokens=40, klass="standard") for i in range(n)
    ]
    profile = load_profile()
    return DigitalTwin(
        arrivals,
        LLMEngineCost(profile),
        model_config_dict(production.spec),
        TimeScale(speedup),
        initial_replicas=2,
        end_s=0.05 * n + 1.0,
        batching_apply_s=profile.batching_apply_s,
    )


# ----------------------------------------------------------------------------- time scaling


def test_time_scale_converts_and_floors_the_control_interval() -> None:
    ts = TimeScale(5)
    assert ts.to_wall(120) == 24 and ts.to_sim(3) == 15
    assert ts.wall_int(300) == 60
    assert ts.interval_s(30) == 6
    assert TimeScale(10).interval_s(30) == MIN_INTERVAL_S  # the CRD's minimum, not 3
    assert ts.kwok_delay(120) == "24000ms" and TimeScale(3).kwok_delay(1) == "333ms"
    assert ts.summary_window_wall_s == pytest.approx(12.0)  # Triton's minute, simulated
    for bad in (0, -1, math.inf, math.nan):
        with pytest.raises(ValueError):
            TimeScale(bad)


def test_lead_in_leaves_room_for_the_operator_and_is_capped() -> None:
    # x5, 1200 simulated s: 20 wall s of setup (100 simulated) + the 120 s warm-up.
    assert lead_in(TimeScale(5), 120, 1200) == pytest.approx(220)
    # A short run caps it so the rise and the peak still fit.
    assert lead_in(TimeScale(1), 120, 240) == pytest.approx(MAX_LEAD_IN_SHARE * 240)
    shape = demo_shape(1200, 6, 2.5, lead_in_s=220)
    assert shape.ramp_s == pytest.approx(RAMP_SHARE * 1200)
    assert shape.duration_s == pytest.approx(1200)
    assert shape.measured_window_s == (pytest.approx(640), pytest.approx(1200))
    assert [phase(shape, t) for t in (0, 219, 221, 639, 641)] == [
        "normal",
        "normal",
        "rising",
        "rising",
        "peak",
    ]
    assert float(shape.multiplier(100)) == pytest.approx(2.5) and float(
        shape.multiplier(700)
    ) == pytest.approx(6)
    assert demo_shape(100, peak=2, base=5).base == 2  # the base never exceeds the peak
    with pytest.raises(ValueError):
        demo_shape(0)


def test_demo_workload_replays_the_trace_through_the_peak(trace: Path) -> None:
    shape = demo_shape(300, peak=4, base=1, lead_in_s=60)
    wl = demo_workload(trace, shape, seed=3, classes=CLASSES)
    times = [a.time_s for a in wl.arrivals]
    assert times == sorted(times) and times[-1] < 300
    early = sum(1 for t in times if t < 60) / 60
    late = sum(1 for t in times if t >= shape.measured_window_s[0]) / shape.hold_s
    assert early == pytest.approx(2.0, rel=0.1) and late == pytest.approx(8.0, rel=0.1)
    assert {a.klass for a in wl.arrivals} == set(CLASSES)
    assert all(a.priority == CLASSES[a.klass or ""] for a in wl.arrivals)
    # Classes the benchmark's mix does not know get equal shares.
    other = demo_workload(trace, shape, classes={"gold": 1, "silver": 2})
    assert {a.klass for a in other.arrivals} == {"gold", "silver"}


# ----------------------------------------------------------------------------- model config


def test_the_operators_load_json_becomes_the_twins_batcher(production: PhoenixDeployment) -> None:
    tuned = BatchingConfig(preferred_batch_sizes=(4, 32), max_queue_delay_us=0, instance_count=2)
    raw = json.loads(to_load_json(model_config_dict(production.spec, tuned)))
    cfg = batcher_from_model_config(raw)
    assert cfg.max_batch_size == 64
    assert cfg.preferred_batch_sizes == (4, 32)
    assert cfg.max_queue_delay_us == 0  # left out of protobuf JSON as a default
    assert cfg.instance_count == 2
    assert (cfg.priority_levels, cfg.default_priority_level) == (3, 2)
    bulk = cfg.policy_for(3)
    assert (bulk.timeout_action, bulk.default_timeout_us, bulk.max_queue_size) == ("REJECT", 30_000_000, 2000)
    assert cfg.policy_for(1).default_timeout_us == 0


@pytest.mark.parametrize(
    "config",
    [
        {"max_batch_size": 0},
        {"max_batch_size": 8, "dynamic_batching": {"preferred_batch_size": [16]}},
        {"max_batch_size": 8, "dynamic_batching": {"default_queue_policy": {"timeout_action": "DROP"}}},
        {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": "soon"}},
    ],
)
def test_configs_triton_would_refuse_are_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ModelConfigError):
        batcher_from_model_config(config)


# ----------------------------------------------------------------------------- the Triton API


class FakeHost:
    model_name = "llama-chat"
    backend = "vllm"

    def __init__(self) -> None:
        self.config: dict[str, Any] = {"name": "llama-chat", "max_batch_size": 8}
        self.loaded: list[Any] = []

    def model_config(self) -> dict[str, Any]:
        return dict(self.config)

    def load_model_config(self, config: Any) -> None:
        if config is not None:
            batcher_from_model_config(config)
            self.config = dict(config)
        self.loaded.append(config)


def test_api_routes_answer_like_triton() -> None:
    host = FakeHost()
    api = TritonControlServer(host)
    try:
        assert api.handle("GET", "/v2/health/ready", b"") == (200, None)
        assert api.handle("GET", "/v2/health/live", b"") == (200, None)
        assert api.handle("GET", "/v2/models/llama-chat/config", b"") == (200, host.config)
        assert api.handle("GET", "/v2/models/llama-chat/versions/1/config", b"")[0] == 200
        assert api.handle("GET", "/v2/models/llama-chat/ready", b"") == (200, None)
        assert api.handle("GET", "/v2/models/llama-chat", b"")[1]["platform"] == "vllm"
        assert api.handle("POST", "/v2/repository/index", b"")[1][0]["state"] == "READY"
        status, body = api.handle("GET", "/v2/models/other/config", b"")
        assert status == 400 and "unknown model" in body["error"]
        assert api.handle("GET", "/v2/models/llama-chat/versions/7/config", b"")[0] == 400
        assert api.handle("GET", "/v2/nothing", b"")[0] == 404
        assert api.handle("POST", "/v2/models/llama-chat/config", b"")[0] == 405
    finally:
        api.stop()


def test_api_load_replaces_the_config_or_refuses_with_400() -> None:
    host = FakeHost()
    api = TritonControlServer(host)
    new = {"name": "llama-chat", "max_batch_size": 16, "dynamic_batching": {"preferred_batch_size": [8]}}
    try:
        body = json.dumps({"parameters": {"config": json.dumps(new)}}).encode()
        assert api.handle("POST", "/v2/repository/models/llama-chat/load", body) == (200, None)
        assert host.config == new and api.loads == [new]
        assert api.handle("POST", "/v2/repository/models/llama-chat/load", b"") == (200, None)  # plain reload
        assert host.loaded[-1] is None
        cases = {
            b"{not json": "parse the request",
            json.dumps({"parameters": {"config": "{"}}).encode(): "parse the model config",
            json.dumps(
                {"parameters": {"config": json.dumps({**new, "name": "x"})}}
            ).encode(): "does not match",
            json.dumps({"parameters": {"config": json.dumps({"max_batch_size": 0})}}).encode(): "load failed",
            json.dumps(
                {"parameters": {"config": "{}", "file:1/model.py": "eA=="}}
            ).encode(): "config overrides only",
        }
        for request, message in cases.items():
            status, answer = api.handle("POST", "/v2/repository/models/llama-chat/load", request)
            assert status == 400 and message in answer["error"], (request, answer)
        assert host.config == new  # nothing refused was applied
    finally:
        api.stop()


def test_the_operators_actuator_retunes_the_twin_over_http(production: PhoenixDeployment) -> None:
    """tritonclient's load_model + get_model_config, exactly as the control loop calls them."""
    twin = small_twin(production)
    with TritonControlServer(twin) as api:
        tuned = BatchingConfig(preferred_batch_sizes=(8, 16), max_queue_delay_us=0, instance_count=1)
        config_json = to_load_json(model_config_dict(production.spec, tuned))
        control = TritonModelControl(timeout_s=10)
        outcome = control.apply([api.address], "llama-chat", config_json)
        assert outcome.applied, outcome.describe()
        assert control.served_batching([api.address], "llama-chat") == {api.address: tuned}
        wrong = control.apply([api.address], "no-such-model", config_json)
        assert not wrong.applied and "unknown model" in wrong.describe()
    assert twin.fleet.config.max_queue_delay_us == 0
    assert [text for _, text in twin.log.configs][-1].startswith("preferred=[8,16] delay=0us")


# ----------------------------------------------------------------------------- the twin


def test_twin_follows_replicas_and_publishes_triton_metrics(production: PhoenixDeployment) -> None:
    twin = small_twin(production)
    twin.advance_to(2.0)
    assert twin.replicas == 2
    assert twin.set_replicas(4) and not twin.set_replicas(4)
    assert twin.set_replicas(0)  # a fleet never empties: one replica keeps serving
    twin.advance_to(4.0)
    assert twin.replicas == 1
    assert [n for _, n in twin.log.replicas] == [2, 4, 1]
    twin.advance_to(twin.end_s)
    names = {m.name: m for m in twin.metrics.families(now=twin.wall_of(twin.now))}
    served = names["nv_inference_request_success"].samples[0].value
    assert served == sum(1 for r in twin.records if r.first_token_s is not None) > 150
    assert names["nv_inference_exec_count"].samples[0].value > 0
    prompts = sum(r.prompt_tokens for r in twin.records if r.first_token_s is not None)
    assert names["vllm:prompt_tokens_total"].samples[0].value == prompts  # the vLLM backend's counters
    classes = {s.labels.get("priority_class") for s in names["phoenix_request_ttft_seconds"].samples}
    assert classes == {"standard"}
    live = twin.live(30.0, ["urgent", "standard"])
    assert live.ttft_p95_by_class_s["urgent"] is None and live.ttft_p95_s is not None


def test_twin_batching_changes_after_triton_s_reload_delay(production: PhoenixDeployment) -> None:
    twin = small_twin(production)
    twin.advance_to(1.0)
    config = model_config_dict(production.spec, BatchingConfig((8, 16), 0, 1))
    twin.load_model_config(config)
    assert twin.model_config()["dynamic_batching"]["max_queue_delay_microseconds"] == 0  # served at once
    replicas = list(twin.fleet.ready)
    assert all(r.batcher.config.max_queue_delay_us == 2000 for r in replicas)  # still loading
    twin.advance_to(1.0 + load_profile().batching_apply_s + 0.01)
    assert all(r.batcher.config.max_queue_delay_us == 0 for r in replicas)
    with pytest.raises(ModelConfigError):
        twin.load_model_config({"name": "llama-chat", "max_batch_size": 0})


def test_twin_runs_against_the_wall_clock(production: PhoenixDeployment) -> None:
    twin = small_twin(production, speedup=200.0)
    twin.start()
    try:
        assert twin.finished.wait(30), "the twin did not reach its end"
    finally:
        twin.stop()
    assert twin.now == pytest.approx(twin.end_s)
    # Its wall clock maps simulated time back to when it happened.
    assert twin.wall_of(twin.end_s) - twin.wall_of(0.0) == pytest.approx(twin.end_s / 200.0, abs=1e-6)
    twin.drain(60.0)
    assert all(r.first_token_s is not None for r in twin.records)


# ----------------------------------------------------------------------------- the request path


class Heard:
    """A live request's watcher that writes down what the twin told it."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def first_token(self, rec: RequestRecord) -> None:
        self.events.append("first_token")

    def finished(self, rec: RequestRecord) -> None:
        self.events.append("finished")

    def rejected(self, rec: RequestRecord, reason: str) -> None:
        self.events.append(f"rejected:{reason}")


def test_live_requests_join_the_twins_run_and_are_reported(production: PhoenixDeployment) -> None:
    twin = small_twin(production, n=20)
    twin.advance_to(0.5)
    heard = Heard()
    rec = twin.submit_live(
        priority=1, klass="urgent", prompt_tokens=300, output_tokens=5, watcher=heard, timeout_us=0
    )
    assert rec.arrival_s == pytest.approx(0.5) and rec.id == 20
    assert heard.events == []
    twin.drain(60.0)
    assert heard.events == ["first_token", "finished"]
    assert twin.fleet.all_done.triggered  # it waited for the live request as well
    records = twin.all_records()
    assert len(records) == 21 and rec in records
    assert [r.arrival_s for r in records] == sorted(r.arrival_s for r in records)
    # A live request after everything else finished opens the run again.
    late = twin.submit_live(priority=2, klass="standard", prompt_tokens=10, output_tokens=2, watcher=Heard())
    assert not twin.fleet.all_done.triggered
    twin.advance_to(twin.now + 5.0)
    assert late.first_token_s is not None and twin.fleet.all_done.triggered


def test_the_gateway_share_is_spread_evenly_over_the_arrivals() -> None:
    picked = gateway_indices(1000, 0.05)
    assert len(picked) == 50
    assert max(b - a for a, b in itertools.pairwise(picked)) == 20
    assert gateway_indices(1000, 0.0) == [] and gateway_indices(10, 1.0) == list(range(10))


def test_request_path_figures_keep_wall_and_simulated_seconds_apart() -> None:
    assert parse_server_timing("embed;dur=3.10, classify;dur=1.00, search;dur=bad, handoff;dur=20") == {
        "embed": pytest.approx(0.0031),
        "classify": pytest.approx(0.001),
        "handoff": pytest.approx(0.02),
    }
    assert twin_id_of("Thanks [twin request 42]") == 42 and twin_id_of("Thanks") is None
    twin_records = {}
    outcomes = []
    for i in range(10):
        rec = RequestRecord(
            i, Arrival(float(i), priority=1 if i < 5 else 2), "urgent" if i < 5 else "standard"
        )
        rec.dispatch_s = i + 0.5 + i * 0.1  # queue 0.5 .. 1.4 simulated s
        rec.first_token_s = rec.dispatch_s + 0.2
        twin_records[i] = rec
        outcomes.append(
            Outcome(
                index=i, arrival_s=float(i), send_lag_s=0.01, status=200,
                priority_class=rec.klass, twin_id=i, client_ttft_s=0.1,
                stages={"classify": 0.002, "embed": 0.010, "search": 0.004, "handoff": 0.02},
            )
        )  # fmt: skip
    outcomes.append(Outcome(index=10, arrival_s=10.0, send_lag_s=2.0, status=504, error="timeout_error"))
    outcomes.append(Outcome(index=11, arrival_s=11.0, send_lag_s=0.0, status=429, error="rate_limit_error"))
    outcomes.append(
        Outcome(index=12, arrival_s=12.0, send_lag_s=0.0, error="cancelled at the end of the run")
    )
    g = gateway_figures(
        outcomes, twin_records, planned_share=0.1, offered=120, classes=["urgent", "standard"], speedup=5
    )
    assert (g["sent"], g["ok"], g["share"]) == (13, 10, 0.1083)
    assert g["errors_by_code"] == {"429": 1, "504": 1, "cancelled_at_end": 1} and g["server_errors"] == 1
    assert g["late_sends"] == 1
    assert g["stages"]["embed"] == {"p50_s": 0.01, "p95_s": 0.01, "n": 10, "clock": "wall"}
    assert g["stages"]["queue"]["clock"] == "simulated" and g["stages"]["queue"]["p95_s"] == pytest.approx(
        1.4
    )
    # TTFT at real speed = wall hand-off + simulated first token (queue + 0.2 s prefill).
    urgent = g["by_class"]["urgent"]
    assert urgent["requests"] == 5 and urgent["ttft_p95_s"] == pytest.approx(0.02 + 0.9 + 0.2)
    assert g["by_class"]["standard"]["ttft_p95_s"] == pytest.approx(0.02 + 1.4 + 0.2)
    live = gateway_live(
        outcomes, twin_records, since_s=5.0, planned_share=0.1, classes=["urgent", "standard"]
    )
    assert live.ttft_p95_by_class_s["urgent"] is None  # none arrived in the window
    assert live.errors == {"504": 1, "429": 1, "cancelled_at_end": 1} and (live.sent, live.ok) == (13, 10)


def test_priority_reaches_the_twin_through_the_real_gateway(production: PhoenixDeployment) -> None:
    """The real gateway (classifier; retrieval off) on the twin's gRPC endpoint, one replica behind
    a backlog of standard requests: a lost-card message is classified urgent and jumps the queue,
    a PIN question waits behind the backlog."""
    import asyncio

    import httpx

    from phoenix_operator.demo.twin_grpc import TwinGrpcServer
    from phoenix_operator.gateway.local import GatewayProcess
    from phoenix_operator.ml.classifier import default_classifier_dir

    spec = production.spec
    backlog = [
        Arrival(0.001 * i, priority=2, prompt_tokens=3000, output_tokens=300, klass="standard")
        for i in range(150)
    ]
    twin = DigitalTwin(
        backlog, LLMEngineCost(load_profile()), model_config_dict(spec), TimeScale(20.0),
        initial_replicas=1, end_s=3000.0, backend="vllm",
    )  # fmt: skip

    async def send(client: httpx.AsyncClient, text: str) -> tuple[int, str | None, int | None]:
        body = {"model": spec.model.name, "messages": [{"role": "user", "content": text}], "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json={**body, "max_tokens": 8}) as resp:
            lines = [line async for line in resp.aiter_lines()]
            ids = [twin_id_of(line) for line in lines if "twin request" in line]
            return resp.status_code, resp.headers.get("x-phoenix-priority-class"), ids[0] if ids else None

    async def standard_then_urgent(url: str) -> list[tuple[int, str | None, int | None]]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            first = asyncio.create_task(send(client, "How do I change my PIN?"))
            await asyncio.sleep(0.3)
            second = asyncio.create_task(send(client, "My card was stolen, please block it right away"))
            return [await first, await second]

    levels = {c.level: c.name for c in spec.priority.classes} if spec.priority else {}
    with (
        TwinGrpcServer(twin, levels, default_level=2) as endpoint,
        GatewayProcess(
            spec, endpoint.address, extra_args=["--classifier", str(default_classifier_dir())]
        ) as gw,
    ):
        twin.start()
        try:
            (code_a, class_a, id_a), (code_b, class_b, id_b) = asyncio.run(standard_then_urgent(gw.url))
        finally:
            twin.stop()
    assert (code_a, class_a, code_b, class_b) == (200, "standard", 200, "urgent")
    records = {r.id: r for r in twin.live_records}
    assert id_a in records and id_b in records
    standard, urgent = records[id_a], records[id_b]
    assert urgent.klass == "urgent" and urgent.arrival_s > standard.arrival_s
    assert urgent.first_token_s is not None and standard.first_token_s is not None
    assert urgent.first_token_s < standard.first_token_s  # arrived later, served first
    assert urgent.queue_s is not None and standard.queue_s is not None
    # Twin seconds run 20x wall time: a loaded machine's scheduling delay shows up multiplied, so
    # the urgent wait is judged against the standard one, not against an absolute bound.
    assert standard.queue_s > 10.0 and urgent.queue_s < standard.queue_s / 4


@pytest.mark.milvus
def test_demo_stops_clearly_when_the_gateway_is_not_ready_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Narrow seam: the gateway's readiness bound is shortened to 0.2 s (it needs seconds to load
    its models) and the knowledge base to one text per intent; everything else is real."""
    import time

    from click.testing import CliRunner

    from phoenix_operator.demo import cli

    monkeypatch.setattr(cli, "GATEWAY_READY_S", 0.2)
    monkeypatch.setattr(cli, "KB_PER_INTENT", 1)
    out = tmp_path / "out"
    began = time.monotonic()
    result = CliRunner().invoke(
        cli.demo,
        ["--no-operator", "--duration", "10", "--gateway-share", "0.1", "--no-plots", "--out", str(out)],
    )
    assert result.exit_code == 1, result.output
    assert (
        "RuntimeError: timed out after 0.2s waiting for gateway ready on http://127.0.0.1:" in result.output
    )
    assert "gateway.log (tail)" in result.output
    assert time.monotonic() - began < 90
    assert not (out / "runs").exists()  # nothing was replayed or saved


# ----------------------------------------------------------------------------- the spec


def test_production_example_is_adjusted_and_says_so() -> None:
    docs = load_documents(find_example())
    demo = adjust(
        docs, namespace="demo", prometheus_url="http://127.0.0.1:9999", timescale=TimeScale(5), startup_s=120
    )
    assert all(d["metadata"]["namespace"] == "demo" for d in demo.documents)
    auto = demo.deployment.spec.autoscaling
    assert auto.prometheus_url == "http://127.0.0.1:9999"
    assert auto.interval_seconds == 6  # 30 s simulated / 5
    assert auto.scale_down_stabilization_seconds == 60
    assert auto.replica_startup_seconds == 24
    assert demo.deployment.spec.triton.pod_annotations[KWOK_READY_DELAY] == "24000ms"
    assert demo.deployment.spec.triton.pod_annotations["cost-center"] == "cs-chatbot"  # kept
    assert demo.name == "chat-prod"
    text = "\n".join(demo.notes)
    for field in (
        "prometheusUrl",
        "intervalSeconds",
        "scaleDownStabilizationSeconds",
        "replicaStartupSeconds",
    ):
        assert field in text
    assert KWOK_READY_DELAY in text
    assert docs[1]["metadata"].get("namespace") is None  # the input is not modified
    with pytest.raises(ValueError):
        adjust(docs[:1], namespace="demo", prometheus_url="http://x:1", timescale=TimeScale(5), startup_s=120)


def test_kwok_pod_ready_stage_honours_the_delay_annotation() -> None:
    stages = {d["metadata"]["name"]: d for d in yaml.safe_load_all(kwok_stages_yaml()) if d}
    delay = stages["pod-ready"]["spec"]["delay"]
    assert delay["durationMilliseconds"] == 0  # pods without the annotation: at once, as before
    assert KWOK_READY_DELAY in delay["durationFrom"]["expressionFrom"]


# ----------------------------------------------------------------------------- the report


def _record(i: int, arrival: float, ttft: float | None, klass: str = "standard") -> RequestRecord:
    rec = RequestRecord(i, Arrival(arrival, klass=klass), klass)
    if ttft is not None:
        rec.first_token_s = arrival + ttft
        rec.dispatch_s = arrival
        rec.status = "ok"
    return rec


def test_cluster_polls_become_a_simulated_timeline_and_pod_lives() -> None:
    t0 = 1000.0
    rows = [(990.0, 2, 2, 2), (1001.0, 2, 2, 2), (1002.0, 5, 2, 5), (1010.0, 5, 5, 5), (1100.0, 3, 3, 3)]
    assert timeline_from(rows, t0, 5.0, end_s=200.0) == [(0.0, 2, 2, 2), (10.0, 5, 2, 5), (50.0, 5, 5, 5)]
    timeline = [(0.0, 2, 2, 2), (10.0, 5, 2, 5), (50.0, 5, 5, 5), (60.0, 3, 3, 3)]
    assert scaling_actions(timeline) == 2
    pods = [(900.0, 905.0, None), (900.0, 905.0, 950.0), (1002.0, 1010.0, 1020.0)]
    assert spans_from(pods, t0, 5.0) == [(0.0, 0.0, None), (10.0, 50.0, 100.0)]


def test_windows_met_counts_windows_from_the_start_of_the_peak() -> None:
    records = [_record(i, 100 + i, 0.5 if i < 60 else 5.0) for i in range(95)]
    # Windows of 30 s from 100: [100,130) [130,160) ok, [160,195) (the short tail merged) over.
    assert windows_met(records, 3.0, (100.0, 195.0)) == (2, 3)
    assert windows_met(records, 3.0, (500.0, 600.0)) == (0, 0)


def test_saved_runs_load_back_for_the_comparison(tmp_path: Path, trace: Path) -> None:
    wl = demo_workload(trace, demo_shape(120, 2, 1, lead_in_s=20), classes=CLASSES)
    records = [
        _record(i, a.time_s, 0.2 if i % 10 else None, a.klass or "") for i, a in enumerate(wl.arrivals)
    ]
    result = FleetResult(
        records, [(0.0, 2, 2, 2), (120.0, 2, 2, 2)], [(0.0, 0.0, None)] * 2, 0, 1, 120.0, 130.0
    )
    run = DemoRun(
        CONTROLLED, "phoenix operator", result, 5.0, decisions=[{"action": "batching", "applied": True}]
    )
    figs = figures(run, wl, 3.0, {"urgent": 1.5, "standard": 3.0}, 3.0)
    assert figs["slo_attainment"] == pytest.approx(0.9, abs=0.03)
    assert figs["decisions_applied"] == 1 and figs["decision_actions"] == {"batching": 1}
    assert figs["mean_replicas"] == pytest.approx(2.0)
    save_run(tmp_path, run, wl, figs)
    back = load_run(tmp_path / "runs" / f"{CONTROLLED}.json", wl)
    assert back is not None and back.label == "phoenix operator"
    again = figures(back, wl, 3.0, {"urgent": 1.5, "standard": 3.0}, 3.0)
    assert again["slo_attainment"] == figs["slo_attainment"]
    assert again["ttft_p99_s"] == figs["ttft_p99_s"] == math.inf
    other = demo_workload(trace, demo_shape(120, 3, 1, lead_in_s=20), classes=CLASSES)
    assert load_run(tmp_path / "runs" / f"{CONTROLLED}.json", other) is None  # another workload


def test_view_renders_with_and_without_a_terminal(production: PhoenixDeployment) -> None:
    from rich.console import Console

    twin = small_twin(production)
    twin.advance_to(5.0)
    decision = {
        "time": "2026-01-01T00:00:00Z",
        "action": "scale-up",
        "summary": "scale-up 2 -> 3 replicas",
        "reason": "TTFT p95 4.1s at 1.37x the 3s target",
        "applied": True,
        "mode": "auto",
    }
    state = ViewState(
        mode="controlled", name="chat-prod", namespace="demo", speedup=5, wall_s=1, wall_total_s=240,
        phase="rising", multiplier=3.2, twin=twin.live(30, ["urgent", "standard"]), sim_total_s=1200,
        class_targets={"urgent": 1.5, "standard": 3.0}, target_s=3.0, window_s=30, desired=3, ready=2,
        provisioned=3, status={"ttftP95Seconds": 4.1, "decisions": [decision]}, decisions=1,
        last_decision_sim_s=259.4,
    )  # fmt: skip
    line = plain_line(state)
    assert "desired 3, ready 2, 1 warming up" in line and "operator sees 4.10 s" in line
    assert "urgent=-/1.5s" in line  # no urgent request in the window: no number, not zero
    assert (
        decision_text(decision) == "scale-up 2 -> 3 replicas (applied): TTFT p95 4.1s at 1.37x the 3s target"
    )
    console = Console(record=True, width=200)
    console.print(render(state))
    assert "at simulated 04:19: scale-up 2 -> 3 replicas (applied)" in console.export_text()
    assert "gateway" not in line  # the request path is off
    outcome = Outcome(
        index=0, arrival_s=4.0, send_lag_s=0.0, status=200, priority_class="urgent",
        stages={"classify": 0.003, "embed": 0.012, "search": 0.006, "handoff": 0.025},
    )  # fmt: skip
    with_gateway = replace(
        state, gateway=gateway_live([outcome], {}, since_s=0.0, planned_share=0.05, classes=["urgent"])
    )
    line = plain_line(with_gateway)
    assert "5% of requests via the gateway (1/1 ok, errors none)" in line
    assert "classify 3 ms embed 12 ms search 6 ms (wall)" in line and "(simulated)" in line
    console.print(render(with_gateway))
    assert "request path" in console.export_text()


# ----------------------------------------------------------------------------- end to end


@pytest.mark.integration
@pytest.mark.prometheus
@pytest.mark.milvus
@pytest.mark.slow
def test_short_demo_runs_the_closed_loop_end_to_end(tmp_path: Path) -> None:
    """A minute of `phoenix demo` at x10 with the load above the spec's fleet from the start:
    the operator must see it through Prometheus and scale the Deployment, and the twin must serve
    with the pods kwok turned Ready — after their warm-up, not before."""
    summary = tmp_path / "summary.json"
    cmd = [
        sys.executable, "-m", "phoenix_operator.cli", "demo",
        "--duration", "60", "--speedup", "10", "--multiplier", "8", "--base-multiplier", "4",
        "--out", str(tmp_path / "out"), "--cluster-dir", str(tmp_path / "cluster"), "--json", str(summary),
        "--gateway-share", str(GATEWAY_SHARE),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = tmp_path / "out" / "logs" / "operator.log"
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}\n--- operator:\n" + (
        log.read_text()[-4000:] if log.exists() else "(no log)"
    )
    data = json.loads(summary.read_text())
    assert data["mode"] == CONTROLLED
    figs = data["figures"]
    for key in ("slo_attainment", "ttft_p95_s", "gpu_hours", "mean_replicas", "peak_windows_met_share"):
        assert isinstance(figs[key], float | int), key
    decisions = data["decisions"]
    applied = [d for d in decisions if d["applied"]]
    assert any(d["action"] == "scale-up" for d in applied), decisions
    # The twin served with what kwok made Ready: it grew when the cluster did, to the same size.
    twin_replicas = [n for _, n in data["twin"]["replicas"]]
    ready = [row[2] for row in data["cluster_timeline"]]
    assert max(twin_replicas) == max(ready) > 2
    assert twin_replicas[-1] == ready[-1]
    # ... and only after the warm-up: no replica became Ready within 12 wall s of the first scale-up.
    first_up = min(d["simulated_s"] for d in applied if d["action"] == "scale-up")
    grew = min(t for t, n in data["twin"]["replicas"] if n > 2)
    assert grew - first_up >= 0.8 * 120  # simulated seconds (a whole-second status clock)
    # Any batching the operator loaded reached the twin (its HTTP path is tested above as well).
    retunes = [d for d in applied if d["action"] in ("batching", "revert-batching")]
    assert len(data["twin"]["batching"]) == 1 + len(retunes)
    assert (tmp_path / "out" / "ttft_p95.png").stat().st_size > 0
    assert not (tmp_path / "cluster").exists()  # torn down without --keep
    # The request path: real chat requests went through the real gateway into the twin.
    gw = data["gateway"]
    assert gw["sent"] > 100 and gw["ok"] > 0.9 * gw["sent"], gw
    assert gw["share"] == pytest.approx(GATEWAY_SHARE, rel=0.1)
    assert gw["server_errors"] == 0, gw["errors_by_code"]
    for stage in ("classify", "embed", "search"):
        assert gw["stages"][stage]["clock"] == "wall" and 0 < gw["stages"][stage]["p95_s"] < 5, stage
    assert gw["stages"]["first_token"]["clock"] == "simulated" and gw["stages"]["first_token"]["n"] > 0
    assert any(c["ttft_p95_s"] is not None for c in gw["by_class"].values()), gw["by_class"]
    assert sum(c["requests"] for c in gw["by_class"].values()) == gw["ok"]
    # Nothing counted twice: the twin scheduled only the arrivals the client did not send.
    assert data["twin"]["scheduled_requests"] + gw["planned"] == data["workload"]["requests"]
    assert gw["ok"] <= data["twin"]["live_requests"] <= gw["sent"] <= gw["planned"]
