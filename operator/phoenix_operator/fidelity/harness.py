"""A real tritonserver serving the emulated model, driven by the load generator."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from phoenix_operator.fidelity.cases import Case
from phoenix_operator.fidelity.config import _FLUSH_FREQUENCIES, FidelityConfig
from phoenix_operator.fidelity.trace import Span, parse_trace
from phoenix_operator.sim.config import BatcherConfig


@dataclass
class RealRun:
    """What the server did with one case."""

    spans: dict[str, Span]
    #: ``nv_inference_*`` counter deltas over the case.
    counters: dict[str, float]
    #: Client view, per request id: (latency s, lateness s, ok).
    client: dict[str, tuple[float, float, bool]]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def dynamic_batching_block(batching: BatcherConfig) -> str:
    """The ``dynamic_batching { ... }`` block of :meth:`BatcherConfig.to_pbtxt`."""
    lines = batching.to_pbtxt().splitlines()
    start = lines.index("dynamic_batching {")
    depth = 0
    for i in range(start, len(lines)):
        depth += lines[i].count("{") - lines[i].count("}")
        if depth == 0:
            return "\n".join(lines[start : i + 1])
    raise ValueError("unbalanced dynamic_batching block")


def read_counters(metrics_url: str, model: str) -> dict[str, float]:
    """Triton's ``nv_inference_*`` counters of one model, summed over label sets."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "counter" or not family.name.startswith("nv_inference_"):
            continue
        for sample in family.samples:
            if sample.labels.get("model") == model:
                out[family.name] = out.get(family.name, 0.0) + sample.value
    return out


class RealServer:
    """A traced ``tritonserver`` running the emulated model with the config under test."""

    def __init__(self, config: FidelityConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = Path(workdir)
        self.trace_dir = self.workdir / "traces"
        self._consumed: set[Path] = set()
        self._flushes = 0
        self._server: Any = None
        self.model = "emulated_llm"

    def __enter__(self) -> RealServer:
        from phoenix_operator.local.models import EMULATED_LLM, emulated_llm_config, write_model_repository
        from phoenix_operator.local.triton import LocalTriton

        cfg = self.config
        self.trace_dir.mkdir(parents=True, exist_ok=True)
        pbtxt = emulated_llm_config(
            max_batch_size=cfg.batching.max_batch_size,
            step_base_ms=cfg.step_base_ms,
            step_per_row_ms=cfg.step_per_row_ms,
            instance_count=cfg.batching.instance_count,
            dynamic_batching=dynamic_batching_block(cfg.batching),
        )
        self.model = EMULATED_LLM
        write_model_repository(self.workdir / "models", self.model, pbtxt)
        trace_args = [
            f"--trace-config=triton,file={self.trace_dir / 'trace.json'}",
            "--trace-config=level=TIMESTAMPS",
            "--trace-config=rate=1",
            "--trace-config=count=-1",
            f"--trace-config=triton,log-frequency={_FLUSH_FREQUENCIES[0]}",
        ]
        self._server = LocalTriton(
            self.workdir / "models",
            [EMULATED_LLM],
            log_path=self.workdir / "tritonserver.log",
            extra_args=trace_args,
        )
        self._server.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.stop()

    @property
    def server(self) -> Any:
        return self._server

    def run(self, case: Case) -> RealRun:
        """Send the case open-loop, wait for every answer, and read its traces and counters."""
        from phoenix_operator.local.loadgen import Arrival as LoadArrival
        from phoenix_operator.local.loadgen import LoadGenerator

        url = self._server.grpc_url if self.config.protocol == "grpc" else self._server.http_url
        arrivals = [
            LoadArrival(at, klass, request_id=case.request_id(i))
            for i, (at, klass) in enumerate(case.schedule)
        ]
        generator = LoadGenerator(url, self.model, dict(self.config.classes), protocol=self.config.protocol)
        load_before = os.getloadavg()
        before = read_counters(self._server.metrics_url, self.model)
        result = generator.run(arrivals)
        spans = self._flush({a.request_id for a in arrivals if a.request_id})
        after = read_counters(self._server.metrics_url, self.model)
        client = {case.request_id(r.index): (r.latency_s, r.lateness_s, r.ok) for r in result.records}
        return RealRun(
            spans=spans,
            counters={k: after.get(k, 0.0) - before.get(k, 0.0) for k in after},
            client=client,
            load_before=load_before,
            load_after=os.getloadavg(),
        )

    def _flush(self, expected: set[str], timeout_s: float = 30.0) -> dict[str, Span]:
        """Replace the trace setting so Triton writes this case's traces, then read them."""
        import tritonclient.http as httpclient

        from phoenix_operator.local._proc import wait_for

        self._flushes += 1
        value = _FLUSH_FREQUENCIES[self._flushes % 2]
        with httpclient.InferenceServerClient(self._server.http_url) as client:
            client.update_trace_settings(settings={"log_frequency": value})
        found: dict[str, Span] = {}

        def collect() -> bool:
            for path in sorted(self.trace_dir.glob("trace.json.*")):
                if path in self._consumed:
                    continue
                try:
                    entries = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue  # still being written
                self._consumed.add(path)
                found.update(parse_trace(entries))
            return expected <= found.keys()

        # On a timeout the case is compared on what arrived; the report counts the missing ones.
        with contextlib.suppress(TimeoutError):
            wait_for(collect, timeout_s, interval_s=0.02, what="the server's traces of the case")
        return {rid: span for rid, span in found.items() if rid in expected}
