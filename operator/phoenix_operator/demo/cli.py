"""``phoenix demo``: the whole product on this machine, closed loop, in one command.

A local cluster, Prometheus, Milvus Lite, the operator and the real gateway around a digital twin of
the Triton fleet. Steps, options, time scaling and what is real or simulated: docs/demo.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click

from phoenix_operator.cluster.local import ClusterError
from phoenix_operator.cluster.waiting import WaitTimeout
from phoenix_operator.demo.report import (
    CONTROLLED,
    STATIC,
    DemoRun,
    bench_report,
    figures,
    jsonable,
    load_run,
    save_run,
    scaling_actions,
    spans_from,
    timeline_from,
)
from phoenix_operator.demo.spec import DemoSpec, adjust, find_example, load_documents, static_notes
from phoenix_operator.demo.timescale import TimeScale
from phoenix_operator.demo.view import ViewState, clock, decision_text, plain_line, render
from phoenix_operator.demo.workload import (
    DEFAULT_BASE,
    DEFAULT_PEAK,
    demo_shape,
    demo_workload,
    lead_in,
    phase,
)
from phoenix_operator.sim.fleet import FleetResult

#: Simulated seconds the live TTFT figures cover.
LIVE_WINDOW_S = 30.0
#: After the run, queued requests get this long (simulated) to finish before they count as unserved.
DRAIN_S = 120.0
#: Share of the arrivals sent as real chat requests through the gateway (the rest go straight into
#: the twin): at the default peak (~165 requests per wall s at x5) this is ~5 per wall s. The gateway
#: spends ~30-100 ms of CPU on each (measured here), so this keeps it under half of one of this 2-core
#: machine's cores, next to the cluster, Prometheus, the operator and the twin.
DEFAULT_GATEWAY_SHARE = 0.03
#: Wall seconds the gateway gets to load its models and report ready.
GATEWAY_READY_S = 120.0
#: BANKING77 training texts per intent in the demo's knowledge base (77 intents).
KB_PER_INTENT = 20
#: Collection the demo's gateway searches (its own, next to the operator's spec collection).
KB_COLLECTION = "demo_banking77"
#: Wall seconds requests still in flight at the end get before they are cancelled.
CLIENT_GRACE_S = 10.0


@dataclass
class Options:
    duration: float
    speedup: float
    trace: Path | None
    multiplier: float
    base_multiplier: float
    json_path: Path | None
    no_operator: bool
    out: Path
    keep: bool
    cluster_dir: Path | None
    namespace: str
    spec_path: Path | None
    seed: int
    plots: bool
    gateway_share: float = 0.0


@dataclass
class Timings:
    started: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.monotonic() - self.started, 1)


class Reporter:
    """Where the demo writes: a rich console; ``step`` lines survive any terminal."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console()
        self.tty = self.console.is_terminal
        if not self.tty:
            self.console = Console(width=160, highlight=False)
        self.started = time.monotonic()

    def step(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.console.print(f"==> [{clock(elapsed)}] {text}", markup=False, highlight=False)

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)


def _close_milvus_clients() -> None:
    """Close the gRPC channel pymilvus keeps after Milvus Lite's readiness check: its keep-alive
    pings earn a GOAWAY "too_many_pings" from the server minutes later, which gRPC logs over the
    live view. The demo itself needs no Milvus client (the operator has its own)."""
    with contextlib.suppress(Exception):
        from pymilvus.client.connection_manager import ConnectionManager

        ConnectionManager.get_instance().close_all()


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(143)  # unwind: every started part is stopped on the way out


@click.command("demo")
@click.option(
    "--duration",
    type=click.FloatRange(min=10),
    default=240.0,
    show_default=True,
    help="Wall-clock seconds of the peak replay (the twin simulates duration x speedup seconds).",
)
@click.option(
    "--speedup",
    type=click.FloatRange(min=0.1, max=50),
    default=5.0,
    show_default=True,
    help="Simulated seconds per wall second (warm-up and the operator's timing are scaled to match).",
)
@click.option(
    "--trace",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV with TIMESTAMP, ContextTokens, GeneratedTokens "
    "(default: the Azure LLM 2023 conversation trace shipped with the package).",
)
@click.option(
    "--multiplier",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_PEAK,
    show_default=True,
    help="Peak multiplier: the trace plays this many times faster at the peak.",
)
@click.option(
    "--base-multiplier",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_BASE,
    show_default=True,
    help="Normal load before the peak, as a multiplier of the trace.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the run's summary figures as JSON here.",
)
@click.option(
    "--no-operator",
    is_flag=True,
    help="The same peak on the spec's static replicas and batching, no control (no cluster needed).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/demo"),
    show_default=True,
    help="Plots, saved runs and logs.",
)
@click.option("--keep", is_flag=True, help="Leave the cluster running afterwards (kubectl get phx -n NS).")
@click.option(
    "--cluster-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State folder of the demo's cluster (default ~/.cache/phoenix-operator/demo-cluster); "
    "a cluster already running there is reused and left running.",
)
@click.option("--namespace", default="demo", show_default=True, help="Namespace of the demo's objects.")
@click.option(
    "--spec",
    "spec_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The PhoenixDeployment to run (default: examples/production.yaml).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Priority-mix seed.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option(
    "--gateway-share",
    type=click.FloatRange(min=0.0, max=1.0),
    default=DEFAULT_GATEWAY_SHARE,
    show_default=True,
    help="Share of the arrivals sent as real chat requests (BANKING77 questions) through the real "
    "gateway, its classifier and Milvus Lite into the twin; 0 turns the request path off.",
)
def demo(
    duration: float,
    speedup: float,
    trace: Path | None,
    multiplier: float,
    base_multiplier: float,
    json_path: Path | None,
    no_operator: bool,
    out: Path,
    keep: bool,
    cluster_dir: Path | None,
    namespace: str,
    spec_path: Path | None,
    seed: int,
    no_plots: bool,
    gateway_share: float,
) -> None:
    """A peak hour on a local cluster: the operator keeps TTFT under target, closed loop."""
    options = Options(
        duration=duration,
        speedup=speedup,
        trace=trace,
        multiplier=multiplier,
        base_multiplier=base_multiplier,
        json_path=json_path,
        no_operator=no_operator,
        out=out,
        keep=keep,
        cluster_dir=cluster_dir,
        namespace=namespace,
        spec_path=spec_path,
        seed=seed,
        plots=not no_plots,
        gateway_share=gateway_share,
    )
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        Demo(options).run()
    except (ClusterError, WaitTimeout, RuntimeError, OSError) as exc:
        # One line for the user (everything the demo started has been stopped by now).
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    finally:
        signal.signal(signal.SIGTERM, previous)


class Demo:
    def __init__(self, options: Options) -> None:
        from phoenix_operator.sim.options import default_trace
        from phoenix_operator.sim.profile import load_profile

        self.o = options
        self.out = options.out
        self.r = Reporter()
        self.timings = Timings()
        self.timescale = TimeScale(options.speedup)
        self.mode = STATIC if options.no_operator else CONTROLLED
        self.trace = options.trace or default_trace()
        self.profile = load_profile()
        self.documents = load_documents(options.spec_path or find_example())
        self.sim_total = self.timescale.to_sim(options.duration)
        self.shape = demo_shape(
            self.sim_total,
            options.multiplier,
            options.base_multiplier,
            lead_in_s=lead_in(self.timescale, self.profile.startup_s, self.sim_total),
        )
        # The spec adjusted with a placeholder URL first: classes and replicas are known before
        # Prometheus has a port (the real URL is put in when Prometheus runs).
        self.spec: DemoSpec = self._adjust("http://prometheus.invalid:9090")
        deployment = self.spec.deployment.spec
        classes = sorted(deployment.priority.classes, key=lambda c: c.level) if deployment.priority else []
        self.class_levels = {c.name: c.level for c in classes}
        self.class_targets = {c.name: c.ttft_target_seconds for c in classes}
        self.target_s = deployment.autoscaling.ttft_p95_target_seconds
        self.workload = demo_workload(
            self.trace, self.shape, seed=options.seed, classes=self.class_levels or None
        )
        from phoenix_operator.demo.gateway_load import gateway_indices

        through = set(gateway_indices(len(self.workload.arrivals), options.gateway_share))
        self.gateway_arrivals = [a for i, a in enumerate(self.workload.arrivals) if i in through]
        self.twin_arrivals = [a for i, a in enumerate(self.workload.arrivals) if i not in through]
        self.load: Any = None
        self.gateway: Any = None
        #: CPU seconds the gateway process used over the run, after loading (what the path cost here).
        self.gateway_cpu_s: float | None = None
        self._gateway_cpu_at_ready = 0.0
        self.twin: Any = None
        self.watch: Any = None
        self.operator: Any = None
        self.cluster: Any = None
        #: Whether the demo stops the cluster at the end (it started it, and no --keep).
        self.stops_cluster = False
        self.operator_warned = False
        self.decisions_printed = 0
        self._milvus_uri: str | None = None

    def _adjust(self, prometheus_url: str) -> DemoSpec:
        return adjust(
            self.documents,
            namespace=self.o.namespace,
            prometheus_url=prometheus_url,
            timescale=self.timescale,
            startup_s=self.profile.startup_s,
        )

    # ------------------------------------------------------------------ the whole run

    def run(self) -> None:
        self._plan()
        with ExitStack() as stack:
            try:
                self._make_twin()
                if self.mode == CONTROLLED:
                    self._start_parts(stack)
                if self.gateway_arrivals:
                    self._start_request_path(stack)
                # The normal load starts now; the operator and its pods come up during the
                # lead-in, as they would at any time of day before a peak.
                self.twin.start()
                stack.callback(self.twin.stop)
                if self.load is not None:
                    self.load.start()
                    stack.callback(self.load.finish, 0.0)
                if self.mode == CONTROLLED:
                    self.r.step(
                        f"twin clock started: normal load for {self.shape.lead_in_s:g} simulated s "
                        f"({self.timescale.to_wall(self.shape.lead_in_s):.0f} wall s) before the rise"
                    )
                    self._start_operator(stack)
                self.timings.mark("setup_s")
                self._replay()
                if self.watch is not None:
                    self.watch.stop()  # the run is over: the twin follows the cluster no longer
                self._finish_request_path()
            except KeyboardInterrupt:
                self.r.step("interrupted: stopping everything the demo started")
                raise SystemExit(130) from None
            finally:
                if self.watch is not None:
                    self.watch.stop()
            if self.mode == CONTROLLED:
                self.r.step(
                    "stopping the operator, Prometheus and Milvus Lite"
                    + (", then the cluster" if self.stops_cluster else "")
                )
        self.timings.mark("teardown_s")
        self._summarize()

    def _plan(self) -> None:
        o, s, wl = self.o, self.timescale, self.workload
        lo, hi = wl.measured
        self.r.step(
            f"phoenix demo ({'operator in control' if self.mode == CONTROLLED else 'NO operator'}): "
            f"{o.duration:g} wall s at {s.describe()} = {self.sim_total:g} simulated s"
        )
        self.r.line(
            f"    load: {wl.name}, {len(wl.arrivals)} requests: x{self.shape.base:g} of the trace for "
            f"{self.shape.lead_in_s:g} s, rising to x{self.shape.peak:g} over {self.shape.ramp_s:g} s, held "
            f"{self.shape.hold_s:g} s (the summary measures the peak held, {lo:g}-{hi:g} s simulated)"
        )
        self.r.line(
            f"    twin: the benchmark's simulator, profile {self.profile.name} per replica; a new replica "
            f"warms up {self.profile.startup_s:g} s = {s.to_wall(self.profile.startup_s):g} wall s"
        )
        self.r.line(
            "    trace: Azure LLM inference trace 2023 (conversation), CC-BY 4.0 — "
            "Patel et al., Splitwise, ISCA 2024"
        )
        if self.mode == STATIC:
            self._print_notes(list(static_notes(self.spec.deployment)))
        if self.gateway_arrivals:
            self.r.line(
                f"    request path: {len(self.gateway_arrivals)} of the {len(wl.arrivals)} arrivals "
                f"({o.gateway_share:.0%}) go as real chat requests (BANKING77 test questions) through the "
                "real gateway (classifier, embedder, Milvus Lite) into the twin; the rest straight into it"
            )
        else:
            self.r.line(
                "    request path: off (--gateway-share 0): every arrival goes straight into the twin"
            )

    def _print_notes(self, notes: list[str]) -> None:
        source = self.o.spec_path or "examples/production.yaml"
        self.r.line(f"    {source}, adjusted for the demo:")
        for note in notes:
            self.r.line(f"      - {note}")

    def _make_twin(self) -> None:
        from phoenix_operator.demo.twin import DigitalTwin
        from phoenix_operator.render.tritonconfig import model_config_dict
        from phoenix_operator.sim.cost import LLMEngineCost

        spec = self.spec.deployment.spec
        self.twin = DigitalTwin(
            self.twin_arrivals,
            LLMEngineCost(self.profile),
            model_config_dict(spec),
            self.timescale,
            initial_replicas=spec.triton.replicas,
            end_s=self.sim_total,
            backend=str(spec.model.backend),
            batching_apply_s=self.profile.batching_apply_s,
            seed=self.o.seed,
        )

    # ------------------------------------------------------------------ the request path

    def _start_request_path(self, stack: ExitStack) -> None:
        """The twin's gRPC endpoint, a knowledge base in Milvus Lite, the gateway, the chat client."""
        from phoenix_operator.data import banking77
        from phoenix_operator.demo.gateway_load import GatewayLoad, read_questions
        from phoenix_operator.demo.twin_grpc import TokenCounts, TwinGrpcServer
        from phoenix_operator.gateway.local import GatewayProcess, banking77_rows, ingest_passages
        from phoenix_operator.local.milvus import LocalMilvus
        from phoenix_operator.ml.classifier import default_classifier_dir
        from phoenix_operator.ml.embedder import Embedder

        r, spec = self.r, self.spec.deployment.spec
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if self._milvus_uri is None:
            r.step("starting Milvus Lite for the gateway's retrieval")
            milvus = LocalMilvus()
            milvus.start()
            stack.callback(milvus.cleanup)
            _close_milvus_clients()
            self._milvus_uri = milvus.uri
        if spec.retrieval is None:
            raise click.ClickException("the request path needs spec.retrieval (a collection to search)")
        collection = spec.retrieval.collection.model_copy(update={"name": KB_COLLECTION})
        rows = banking77_rows("train", per_intent=KB_PER_INTENT)
        r.step(f"knowledge base: embedding {len(rows)} BANKING77 training texts into {KB_COLLECTION}")
        embedder = Embedder.load(threads=1)
        ingest_passages(self._milvus_uri, collection, [text for text, _ in rows], embedder)
        del embedder
        _close_milvus_clients()
        r.step("the intent classifier (trained on BANKING77's training split on first use, then cached)")
        classifier = default_classifier_dir()

        levels = {c.level: c.name for c in spec.priority.classes} if spec.priority else {0: "default"}
        default_level = (
            next(c.level for c in spec.priority.classes if c.name == spec.priority.default_class)
            if spec.priority
            else 0
        )
        counts = TokenCounts([(a.prompt_tokens, a.output_tokens) for a in self.gateway_arrivals])
        grpc_server = stack.enter_context(TwinGrpcServer(self.twin, levels, default_level, counts))
        gateway_spec = spec.model_copy(
            update={"retrieval": spec.retrieval.model_copy(update={"collection": collection})}
        )
        gateway = GatewayProcess(
            gateway_spec,
            grpc_server.address,
            milvus_uri=self._milvus_uri,
            workdir=logs / "gateway",
            extra_args=["--classifier", str(classifier)],
            ready_timeout_s=GATEWAY_READY_S,
        )
        r.step(
            f"starting the gateway (phoenix gateway, log: {gateway.log_path}) on the twin's gRPC endpoint "
            f"{grpc_server.address}; ready within {GATEWAY_READY_S:g} s or the demo stops"
        )
        gateway.start()
        stack.callback(gateway.stop)
        self.gateway = gateway
        self._gateway_cpu_at_ready = gateway.cpu_seconds()
        r.line(f"    gateway ready on {gateway.url} (loading took {self._gateway_cpu_at_ready:.0f} CPU s)")
        self.load = GatewayLoad(
            gateway.url,
            spec.gateway.served_model_name or spec.model.name,
            self.gateway_arrivals,
            read_questions(banking77("test")),
            self.twin.mono_of,
            max_tokens_cap=spec.gateway.max_output_tokens,
            timeout_s=spec.gateway.request_timeout_seconds + 5.0,
        )

    def _finish_request_path(self) -> None:
        """Serve what is queued (as the summary does), then give the client's last answers time."""
        if self.load is None:
            return
        self.twin.drain(DRAIN_S)
        self.load.finish(CLIENT_GRACE_S)
        with contextlib.suppress(OSError, AssertionError):
            self.gateway_cpu_s = round(self.gateway.cpu_seconds() - self._gateway_cpu_at_ready, 1)

    def _gateway_figures(self) -> dict[str, Any] | None:
        from phoenix_operator.demo.requestpath import gateway_figures

        if self.load is None:
            return None
        figures_ = gateway_figures(
            self.load.snapshot(),
            {rec.id: rec for rec in self.twin.live_records},
            planned_share=self.o.gateway_share,
            offered=len(self.workload.arrivals),
            classes=list(self.class_targets) or ["default"],
            speedup=self.timescale.speedup,
        )
        figures_["planned"] = len(self.gateway_arrivals)
        figures_["gateway_cpu_s"] = self.gateway_cpu_s
        return figures_

    # ------------------------------------------------------------------ the real parts

    def _start_parts(self, stack: ExitStack) -> None:
        from phoenix_operator.cluster.local import LocalCluster
        from phoenix_operator.cluster.ports import pick_ports
        from phoenix_operator.demo import stack as parts
        from phoenix_operator.demo.triton_api import TritonControlServer
        from phoenix_operator.local.milvus import LocalMilvus
        from phoenix_operator.local.prometheus import LocalPrometheus, ScrapeTarget
        from phoenix_operator.local.triton_metrics import TritonMetricsServer

        o, r = self.o, self.r
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)

        # The twin's Triton API and /metrics first: the operator and Prometheus talk to them.
        api = stack.enter_context(TritonControlServer(self.twin))
        (metrics_port,) = pick_ports(1)
        stack.enter_context(TritonMetricsServer([self.twin.metrics], metrics_port))
        r.step(
            f"digital twin: Triton API on {api.address}, Triton metrics on 127.0.0.1:{metrics_port}/metrics"
        )

        state_dir = (o.cluster_dir or parts.default_demo_cluster_dir()).expanduser().absolute()
        cluster = LocalCluster(
            state_dir, die_with_parent=not o.keep, quiet=False, log=lambda m: r.line(f"    {m}")
        )
        self.cluster = cluster
        reused = cluster.is_running()
        if reused and not parts.supports_ready_delay(cluster):
            raise click.ClickException(
                f"the cluster in {state_dir} was started by an older version whose kwok has no pod-ready "
                f"delay; stop it with `phoenix cluster down --state-dir {state_dir}` and run the demo again"
            )
        r.step(
            ("reusing the local cluster in " if reused else "starting the local cluster in ") + str(state_dir)
        )
        up = cluster.up(timeout=240)
        if not reused:
            r.line(
                f"    cluster ready in {up.seconds:.1f} s at {up.server} (4 fake nodes x 8 H100, 1 CPU node)"
            )
            if not o.keep:
                self.stops_cluster = True
                stack.callback(self._cluster_down)
        client = parts.api_client(cluster.kubeconfig)
        stack.callback(client.close)
        parts.apply_crd(client)

        r.step("starting Milvus Lite (the managed Milvus' stand-in)")
        milvus = LocalMilvus()  # a fresh temporary folder, removed at the end
        milvus.start()
        stack.callback(milvus.cleanup)
        _close_milvus_clients()
        host_port = milvus.uri.split("://", 1)[-1]

        labels = {"phoenix_deployment": self.spec.name, "namespace": o.namespace, "pod": "twin"}
        prometheus = LocalPrometheus(
            [ScrapeTarget(f"127.0.0.1:{metrics_port}", labels, job="triton")],
            scrape_interval_s=1.0,
            workdir=self.out / "prometheus",
        )
        r.step("starting Prometheus (scrapes the twin every second)")
        prometheus.start()
        stack.callback(prometheus.stop)
        prometheus.wait_for_targets_up(timeout_s=60)
        self.spec = self._adjust(prometheus.url)

        if parts.recreate_namespace(client, o.namespace):
            r.line(f"    removed the namespace {o.namespace} a previous run left behind")
        self._client, self._milvus_address, self._api_address, self._logs = (
            client,
            host_port,
            api.address,
            logs,
        )
        self._milvus_uri = milvus.uri

    def _start_operator(self, stack: ExitStack) -> None:
        from phoenix_operator.cluster.waiting import wait_for
        from phoenix_operator.demo import stack as parts

        o, r, logs, client = self.o, self.r, self._logs, self._client
        r.step(f"starting the operator: phoenix run --namespace {o.namespace} (log: {logs / 'operator.log'})")
        self.operator = parts.OperatorProcess(
            namespace=o.namespace,
            env=parts.operator_env(
                self.cluster.kubeconfig, milvus=self._milvus_address, triton=self._api_address
            ),
            log_path=logs / "operator.log",
        ).start()
        stack.callback(self.operator.stop)
        self._print_notes(self.spec.notes)
        applied = parts.apply_documents(client, self.spec.documents)
        r.step(f"applied {', '.join(applied)} to namespace {o.namespace}")

        # Polled here until the pods are up; from then on the twin follows them.
        self.watch = parts.ClusterWatch(client, o.namespace, self.spec.name)
        want = self.spec.deployment.spec.triton.replicas
        r.step(f"waiting for the operator's {want} Triton pods to warm up and turn Ready")

        def ready() -> bool:
            if not self.operator.running():
                raise click.ClickException(f"the operator exited; see {logs / 'operator.log'}")
            return self.watch.poll().ready >= want

        wait_for(ready, timeout=180 + self.timescale.to_wall(self.profile.startup_s), interval=0.5,
                 description=f"{want} Ready Triton pods", ignore=(OSError,))  # fmt: skip
        self.watch.follow(self.twin.set_replicas)
        self.watch.start()
        at = self.twin.now
        rise = self.shape.lead_in_s
        r.step(
            f"{want} Triton pods Ready at simulated {clock(at)}; the operator is in control"
            + ("" if at <= rise else f" — AFTER the rise began at {clock(rise)} (slow machine)")
        )

    def _cluster_down(self) -> None:
        if self.cluster is not None:
            self.r.line(f"    stopping the local cluster in {self.cluster.state_dir}")
            self.cluster.down()

    # ------------------------------------------------------------------ the replay

    def _view_state(self) -> ViewState:
        snap = self.watch.latest if self.watch is not None else None
        sim = self.twin.now
        return ViewState(
            mode="controlled" if self.mode == CONTROLLED else "static",
            name=self.spec.name,
            namespace=self.o.namespace,
            speedup=self.timescale.speedup,
            wall_s=self.timescale.to_wall(sim),
            wall_total_s=self.o.duration,
            phase=phase(self.shape, sim),
            multiplier=float(self.shape.multiplier(sim)),
            twin=self.twin.live(LIVE_WINDOW_S, list(self.class_targets)),
            sim_total_s=self.sim_total,
            class_targets=self.class_targets,
            target_s=self.target_s,
            window_s=LIVE_WINDOW_S,
            desired=None if snap is None else snap.desired,
            ready=None if snap is None else snap.ready,
            provisioned=None if snap is None else snap.provisioned,
            status={} if snap is None else snap.status,
            decisions=0 if self.watch is None else len(self.watch.decisions),
            last_decision_sim_s=self._last_decision_sim(snap.status if snap is not None else {}),
            gateway=self._gateway_live(sim),
        )

    def _gateway_live(self, sim: float) -> Any:
        from phoenix_operator.demo.requestpath import gateway_live

        if self.load is None:
            return None
        with self.twin.lock:
            records = {rec.id: rec for rec in self.twin.live_records}
        return gateway_live(
            self.load.snapshot(),
            records,
            since_s=sim - LIVE_WINDOW_S,
            planned_share=self.o.gateway_share,
            classes=list(self.class_targets) or ["default"],
        )

    def _last_decision_sim(self, status: Any) -> float | None:
        decisions = status.get("decisions") or []
        return self._sim_of(decisions[-1].get("time")) if decisions else None

    def _new_decisions(self) -> Iterator[str]:
        if self.watch is None:
            return
        fresh = self.watch.decisions[self.decisions_printed :]
        self.decisions_printed += len(fresh)
        for d in fresh:
            yield f"    decision at simulated {clock(self._sim_of(d.get('time')))}: {decision_text(d, 300)}"

    def _sim_of(self, stamp: Any) -> float:
        try:
            at = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
        except ValueError:
            return math.nan
        return max(0.0, (at - self.twin.wall_of(0.0)) * self.timescale.speedup)

    def _replay(self) -> None:
        r = self.r
        left = self.o.duration - self.timescale.to_wall(self.twin.now)
        r.step(
            f"replaying the peak: {left:.0f} wall s to go"
            + (" (live view below)" if r.tty else "; a progress line every few seconds")
        )
        deadline = time.monotonic() + left + 120.0
        if r.tty:
            from rich.live import Live

            with Live(render(self._view_state()), console=r.console, refresh_per_second=2) as live:
                while not self.twin.finished.wait(0.5):
                    for text in self._new_decisions():
                        live.console.print(text, markup=False, highlight=False)
                    live.update(render(self._view_state()))
                    self._check(deadline)
                live.update(render(self._view_state()))
        else:
            every = max(5.0, self.o.duration / 24.0)
            next_line = 0.0
            while not self.twin.finished.wait(0.5):
                for text in self._new_decisions():
                    r.line(text)
                if time.monotonic() - self.r.started >= next_line:
                    r.line(plain_line(self._view_state()))
                    next_line = time.monotonic() - self.r.started + every
                self._check(deadline)
            r.line(plain_line(self._view_state()))
        for text in self._new_decisions():
            r.line(text)
        self.timings.mark("replay_done_s")

    def _check(self, deadline: float) -> None:
        if self.operator is not None and not self.operator.running() and not self.operator_warned:
            self.operator_warned = True
            self.r.line(f"    WARNING: the operator exited; see {self.out / 'logs' / 'operator.log'}")
        if time.monotonic() > deadline:
            raise click.ClickException("the twin fell far behind the wall clock; the machine is overloaded")

    # ------------------------------------------------------------------ the summary

    def _result(self) -> DemoRun:
        twin, s = self.twin, self.timescale.speedup
        twin.drain(DRAIN_S)
        t0 = twin.wall_of(0.0)
        horizon = self.sim_total
        if self.watch is not None:
            # Until the operator's Deployment has its replicas (it is created with one, then set
            # to the spec's), the twin serves with the spec's replicas.
            n = self.spec.deployment.spec.triton.replicas
            snapshots = list(self.watch.snapshots)
            first = next((i for i, x in enumerate(snapshots) if x.desired >= n), len(snapshots))
            rows = [(t0, n, n, n)] + [(x.at, x.desired, x.ready, x.provisioned) for x in snapshots[first:]]
            timeline = timeline_from(rows, t0, s, horizon)
            pods = [(p.created, p.ready, p.gone) for p in self.watch.pods.values()]
            spans = spans_from(pods, t0, s)
            label = "phoenix operator"
        else:
            n = self.spec.deployment.spec.triton.replicas
            timeline = [(0.0, n, n, n)]
            spans = [(0.0, 0.0, None)] * n
            label = f"no operator ({n} replicas)"
        if timeline:
            timeline.append((horizon, *timeline[-1][1:]))
        result = FleetResult(
            records=twin.all_records(),
            timeline=timeline,
            replica_spans=spans,
            scaling_actions=scaling_actions(timeline),
            batching_changes=max(0, len(twin.log.configs) - 1),
            horizon_s=horizon,
            end_s=float(twin.env.now),
            batches=twin.fleet._batch_id,
        )
        extra: dict[str, Any] = {
            "twin_replica_changes": max(0, len(twin.log.replicas) - 1),
            "twin_max_lag_wall_s": round(twin.max_lag_s, 3),
            "setup_wall_s": self.timings.marks.get("setup_s"),
        }
        decisions = list(self.watch.decisions) if self.watch is not None else []
        for d in decisions:
            d["simulated_s"] = round(self._sim_of(d.get("time")), 1)
        return DemoRun(
            mode=self.mode, label=label, result=result, speedup=s, decisions=decisions, extra=extra
        )

    def _summarize(self) -> None:
        from phoenix_operator.sim.bench import make_context
        from phoenix_operator.sim.report import render_table, write_plots

        r, o = self.r, self.o
        run = self._result()
        price = self.profile.price_per_gpu_hour_usd
        figs = figures(run, self.workload, self.target_s, self.class_targets, price)
        save_run(self.out, run, self.workload, figs)
        runs = [(run, figs)]
        other_mode = CONTROLLED if self.mode == STATIC else STATIC
        other = load_run(self.out / "runs" / f"{other_mode}.json", self.workload)
        if other is not None:
            other_figs = figures(other, self.workload, self.target_s, self.class_targets, price)
            runs = (
                [(other, other_figs), (run, figs)]
                if other_mode == CONTROLLED
                else [(run, figs), (other, other_figs)]
            )
        context = make_context(self.workload, self.profile, slo_ttft_s=self.target_s)
        report = bench_report(context, price, runs)
        r.console.print(render_table(report))
        if other is not None:
            r.line(f"    ('{other.label}' is the saved run in {self.out / 'runs'}, same workload)")
        self._verdict(run, figs)
        gateway = self._gateway_figures()
        if gateway is not None:
            self._gateway_verdict(gateway)
        if o.plots:
            for path in write_plots(report, self.out):
                r.line(f"    wrote {path}")
        total = round(time.monotonic() - self.timings.started, 1)
        summary = {
            "mode": self.mode,
            "speedup": self.timescale.speedup,
            "duration_wall_s": o.duration,
            "duration_simulated_s": self.sim_total,
            "trace": str(self.trace),
            "workload": jsonable(self.workload.summary()),
            "ttft_target_s": self.target_s,
            "class_targets_s": self.class_targets,
            "figures": jsonable(figs),
            "decisions": jsonable(run.decisions),
            "twin": {
                "replicas": [[round(t, 2), n] for t, n in self.twin.log.replicas],
                "batching": [[round(t, 2), text] for t, text in self.twin.log.configs],
                "max_lag_wall_s": round(self.twin.max_lag_s, 3),
                "scheduled_requests": len(self.twin.records),
                "live_requests": len(self.twin.live_records),
            },
            "cluster_timeline": [list(row) for row in run.result.timeline],
            "gateway": gateway,
            "spec_adjustments": self.spec.notes
            if self.mode == CONTROLLED
            else list(static_notes(self.spec.deployment)),
            "timings_wall_s": {**self.timings.marks, "total_s": total},
        }
        if o.json_path is not None:
            o.json_path.parent.mkdir(parents=True, exist_ok=True)
            o.json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            r.line(f"    wrote {o.json_path}")
        if self.mode == CONTROLLED and self.cluster is not None and not self.stops_cluster:
            why = "--keep" if o.keep else "it was running before the demo"
            r.step(f"the cluster keeps running ({why}); to look at what the operator did:")
            for text in self.cluster.env_lines():
                r.line(f"    {text}")
            r.line(
                f"    kubectl get phx -n {o.namespace}; "
                f"kubectl describe phx {self.spec.name} -n {o.namespace}"
            )
            r.line(f"    stop it with: phoenix cluster down --state-dir {self.cluster.state_dir}")
        r.step(f"done in {clock(total)} (setup {self.timings.marks.get('setup_s', 0):.0f} s)")

    def _verdict(self, run: DemoRun, figs: dict[str, Any]) -> None:
        r = self.r
        met, windows = figs["peak_windows_met"], figs["peak_windows"]
        share = figs["peak_windows_met_share"]
        lo, hi = self.workload.measured
        who = "with the operator" if self.mode == CONTROLLED else "without the operator"
        r.line(
            f"    {who}: TTFT p95 met the {self.target_s:g} s target in {met} of {windows} 30-s windows "
            f"of the peak held ({'-' if math.isnan(share) else f'{share:.0%}'}), "
            f"simulated {lo:.0f}-{hi:.0f} s"
        )
        rise = figs.get("rise_windows", 0)
        if rise:
            r.line(
                f"    during the rise before it (simulated {self.shape.lead_in_s:.0f}-{lo:.0f} s): "
                f"{figs['rise_windows_met']} of {rise} windows met the target; whole run: "
                f"{100 * figs['whole_run']['slo_attainment']:.1f}% of all requests within {self.target_s:g} s"
            )
        classes = ", ".join(
            f"{name} {100 * (figs['class_attainment'].get(name) or 0):.1f}% within {target:g} s"
            for name, target in self.class_targets.items()
        )
        r.line(f"    requests of the peak meeting their class target: {classes}")
        if self.mode == CONTROLLED:
            actions = ", ".join(f"{n} {a}" for a, n in sorted(figs["decision_actions"].items())) or "none"
            r.line(
                f"    operator decisions: {figs['decisions']} ({actions}), "
                f"{figs['decisions_applied']} applied; the twin followed "
                f"{figs['twin_replica_changes']} replica changes and "
                f"{run.result.batching_changes} batching change(s); peak {figs['peak_replicas']} replicas"
            )
        with contextlib.suppress(KeyError, TypeError):
            r.line(
                f"    GPU cost over the peak held: {figs['gpu_hours']:.2f} GPU-h, ${figs['cost_usd']:.2f} "
                f"(mean {figs['mean_replicas']:.2f} replicas)"
            )
        if self.twin.max_lag_s > 1.0:
            r.line(f"    note: the twin lagged up to {self.twin.max_lag_s:.1f} wall s behind (busy machine)")

    def _gateway_verdict(self, g: dict[str, Any]) -> None:
        from phoenix_operator.demo.requestpath import LATE_SEND_S

        r = self.r
        errors = ", ".join(f"{n} x {code}" for code, n in g["errors_by_code"].items()) or "none"
        r.line(
            f"    request path: {g['sent']} of {g['offered']} requests ({g['share']:.1%}) went through the "
            f"real gateway ({g['ok']} answered; errors: {errors}); the rest went straight into the twin"
            + (
                f"; {g['late_sends']} sent over {LATE_SEND_S:g} wall s late (busy machine)"
                if g["late_sends"]
                else ""
            )
        )
        st = g["stages"]
        wall = ", ".join(
            f"{name} {_ms(st[name]['p50_s'])}/{_ms(st[name]['p95_s'])}"
            for name in ("classify", "embed", "search", "handoff")
        )
        sim = ", ".join(
            f"{name} {_sec(st[name]['p50_s'])}/{_sec(st[name]['p95_s'])}" for name in ("queue", "first_token")
        )
        cpu = g.get("gateway_cpu_s")
        r.line(
            "      stages p50/p95, wall (real gateway"
            + ("" if cpu is None else f", {cpu:g} CPU s over the run")
            + f"): {wall}"
        )
        r.line(f"      stages p50/p95, simulated (twin at x{self.timescale.speedup:g}): {sim}")
        per_class = ", ".join(
            f"{name} {_sec(c['ttft_p95_s'])} ({c['requests']} requests)" for name, c in g["by_class"].items()
        )
        r.line(f"      TTFT p95 by the gateway's class (wall hand-off + simulated first token): {per_class}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _sec(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def main() -> None:  # pragma: no cover - `python -m phoenix_operator.demo.cli`
    demo(sys.argv[1:])
