"""Metric source: one :class:`Observation` per PhoenixDeployment and interval, from Prometheus.

Pure query building and parsing, and one class that does the I/O; docs/operator.md ("Where
each signal comes from") says which series each figure is read from and why.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from phoenix_operator.observation import Observation

# Query names (keys of build_queries' result).
Q_TTFT_HISTOGRAM = "ttft_histogram"
Q_TTFT_VLLM = "ttft_vllm_histogram"
Q_PROMPT_TOKENS = "mean_prompt_tokens"
Q_OUTPUT_TOKENS = "mean_output_tokens"
Q_TTFT_SUMMARY = "ttft_summary"
Q_TTFT_COUNTERS = "ttft_counters"
Q_CLASS_TTFT = "class_ttft"
Q_RETRIEVAL = "retrieval_p95"
Q_STAGES = "gateway_stages_p95"
Q_QUEUE = "queue_time"
Q_COMPUTE = "compute_time"
Q_SUCCESS_RATE = "success_rate"
Q_FAILURE_RATE = "failure_rate"
Q_BATCH = "mean_batch_size"
Q_GPU_DCGM = "gpu_dcgm"
Q_GPU_TRITON = "gpu_triton"
Q_PENDING = "pending_requests"
Q_READY = "ready_replicas"
Q_TARGETS = "targets"
Q_TARGETS_UP = "targets_up"
Q_NEWEST = "newest_sample"

#: Metric whose newest sample timestamp decides staleness (every Triton exports it per model).
FRESHNESS_METRIC = "nv_inference_count"

CLASS_TTFT_METRIC = "phoenix_request_ttft_seconds"
#: The gateway's histograms: embed + search of one request, and each stage by priority class.
RETRIEVAL_METRIC = "phoenix_gateway_retrieval_seconds"
STAGE_METRIC = "phoenix_gateway_stage_seconds"
#: Triton's vLLM backend (labels ``model``, ``version``).
VLLM_TTFT_METRIC = "vllm:time_to_first_token_seconds"
VLLM_PROMPT_TOKENS = "vllm:prompt_tokens_total"
VLLM_GENERATION_TOKENS = "vllm:generation_tokens_total"

#: Every value field of Observation that the source fills (used to blank them when stale).
VALUE_FIELDS: tuple[str, ...] = (
    "ttft_p95_s",
    "queue_time_s",
    "compute_time_s",
    "request_rate",
    "mean_batch_size",
    "gpu_utilization",
    "error_rate",
    "pending_requests",
    "ready_replicas",
    "mean_prompt_tokens",
    "mean_output_tokens",
    "retrieval_p95_s",
)

NO_TRAFFIC = "NaN (no requests in window)"


# --------------------------------------------------------------------------------------------
# Query building (pure)
# --------------------------------------------------------------------------------------------
def promql_duration(seconds: float) -> str:
    """``30s`` / ``1500ms`` range text for a window in seconds."""
    if seconds <= 0:
        raise ValueError(f"window must be positive, got {seconds}")
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal (JSON escaping is a subset of PromQL's)."""
    return json.dumps(value)


def label_matchers(selector: str, **extra: str) -> str:
    """``{selector,k="v"}`` from a matcher list such as ``phoenix_deployment="chat",namespace="x"``.

    Braces around ``selector`` are accepted and stripped; ``extra`` values are quoted here; an
    empty result is ``""`` (not ``{}``, which Prometheus rejects).
    """
    inner = selector.strip()
    if inner.startswith("{") and inner.endswith("}"):
        inner = inner[1:-1].strip()
    inner = inner.rstrip(",").strip()
    parts = [inner] if inner else []
    parts += [f"{key}={promql_string(value)}" for key, value in extra.items()]
    # ``metric{}`` is a PromQL syntax error; no matchers means the bare metric name.
    return "{" + ",".join(parts) + "}" if parts else ""


def build_queries(
    selector: str,
    model: str,
    window_s: float,
    *,
    gpu_selector: str | None = None,
    quantile: float = 0.95,
) -> dict[str, str]:
    """All PromQL for one observation, keyed by the ``Q_*`` names.

    ``selector`` scopes every query to the deployment's scrape targets (Triton pods and the
    gateway exporting the per-class histogram); ``gpu_selector`` scopes GPU metrics, which come
    from DCGM exporter pods whose labels differ (defaults to ``selector``).
    """
    w = promql_duration(window_s)
    s = label_matchers(selector)
    sm = label_matchers(selector, model=model)
    g = label_matchers(gpu_selector if gpu_selector is not None else selector)
    sq = label_matchers(selector, model=model, quantile=repr(quantile))
    success = f"sum(rate(nv_inference_request_success{sm}[{w}]))"
    # Input copy + model execution + output copy; summed separately because rate() drops the
    # metric name, so a regex over the three names would collide on identical label sets.
    compute = " + ".join(
        f"sum(rate(nv_inference_compute_{part}_duration_us{sm}[{w}]))"
        for part in ("input", "infer", "output")
    )
    return {
        Q_TTFT_HISTOGRAM: (
            f"histogram_quantile({quantile}, sum by (le) "
            f"(rate(nv_inference_first_response_histogram_ms_bucket{sm}[{w}])))"
        ),
        Q_TTFT_VLLM: (
            f"histogram_quantile({quantile}, sum by (le) (rate({VLLM_TTFT_METRIC}_bucket{sm}[{w}])))"
        ),
        # Per replica p95, only replicas that served requests in the window; max = upper bound.
        Q_TTFT_SUMMARY: (
            f"max(nv_inference_request_summary_us{sq} and on (instance, model, version) "
            f"(rate(nv_inference_request_success{sm}[{w}]) > 0))"
        ),
        Q_TTFT_COUNTERS: f"sum(rate(nv_inference_request_duration_us{sm}[{w}])) / {success}",
        Q_CLASS_TTFT: (
            f"histogram_quantile({quantile}, sum by (le, priority_class) "
            f"(rate({CLASS_TTFT_METRIC}_bucket{s}[{w}])))"
        ),
        # The gateway's histograms carry no model label (one gateway per deployment).
        Q_RETRIEVAL: f"histogram_quantile({quantile}, sum by (le) (rate({RETRIEVAL_METRIC}_bucket{s}[{w}])))",
        Q_STAGES: (
            f"histogram_quantile({quantile}, sum by (le, stage) (rate({STAGE_METRIC}_bucket{s}[{w}])))"
        ),
        Q_QUEUE: f"sum(rate(nv_inference_queue_duration_us{sm}[{w}])) / {success}",
        Q_COMPUTE: f"({compute}) / {success}",
        Q_SUCCESS_RATE: success,
        Q_PROMPT_TOKENS: f"sum(rate({VLLM_PROMPT_TOKENS}{sm}[{w}])) / {success}",
        Q_OUTPUT_TOKENS: f"sum(rate({VLLM_GENERATION_TOKENS}{sm}[{w}])) / {success}",
        Q_FAILURE_RATE: f"sum(rate(nv_inference_request_failure{sm}[{w}]))",
        Q_BATCH: f"sum(rate(nv_inference_count{sm}[{w}])) / sum(rate(nv_inference_exec_count{sm}[{w}]))",
        Q_GPU_DCGM: f"avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{g}[{w}]))",
        Q_GPU_TRITON: f"avg(avg_over_time(nv_gpu_utilization{g}[{w}]))",
        Q_PENDING: f"sum(nv_inference_pending_request_count{sm})",
        Q_READY: f"count(count by (instance) ({FRESHNESS_METRIC}{sm}) and on (instance) (up{s} == 1))",
        Q_TARGETS: f"count(up{s})",
        Q_TARGETS_UP: f"count(up{s} == 1)",
        Q_NEWEST: f"max(timestamp({FRESHNESS_METRIC}{sm}))",
    }


# --------------------------------------------------------------------------------------------
# Result parsing (pure)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One element of an instant vector."""

    labels: Mapping[str, str]
    value: float
    timestamp: float


@dataclass(frozen=True)
class QueryOutcome:
    """A query's parsed answer, or why there is none."""

    query: str
    samples: tuple[Sample, ...] = ()
    error: str | None = None
    #: True when Prometheus itself could not be reached (not a bad query).
    unreachable: bool = False


#: Tags each answer of a combined query with the name of the query it answers.
QUERY_LABEL = "phoenix_query"
#: Longest combined expression sent at once: the query travels in the URL, and proxies in front
#: of Prometheus commonly refuse request lines beyond 8 KB (the expression is URL-encoded).
MAX_COMBINED_CHARS = 3000


def combined_queries(queries: Mapping[str, str], max_chars: int = MAX_COMBINED_CHARS) -> list[dict[str, str]]:
    """``queries`` grouped so that each group goes to Prometheus as one expression (`combine`).

    A step asks about twenty questions; one request per question costs Prometheus and the
    operator an HTTP round trip each, for every autoscaled deployment at every interval.
    """
    groups: list[dict[str, str]] = []
    size = 0
    for name, promql in queries.items():
        length = len(_tagged(name, promql)) + 4
        if not groups or size + length > max_chars:
            groups.append({})
            size = 0
        groups[-1][name] = promql
        size += length
    return groups


def _tagged(name: str, promql: str) -> str:
    return f'label_replace({promql}, "{QUERY_LABEL}", "{name}", "", "")'


def combine(queries: Mapping[str, str]) -> str:
    """One expression answering every query, each answer tagged with its name in `QUERY_LABEL`."""
    return " or ".join(_tagged(name, promql) for name, promql in queries.items())


def split_combined(outcome: QueryOutcome, queries: Mapping[str, str]) -> dict[str, QueryOutcome]:
    """Each query's own outcome from the answer to `combine` (a failure is every query's)."""
    if outcome.error is not None:
        return {
            name: QueryOutcome(promql, error=outcome.error, unreachable=outcome.unreachable)
            for name, promql in queries.items()
        }
    answers: dict[str, list[Sample]] = {name: [] for name in queries}
    for sample in outcome.samples:
        name = sample.labels.get(QUERY_LABEL)
        if name in answers:
            labels = {k: v for k, v in sample.labels.items() if k != QUERY_LABEL}
            answers[name].append(Sample(labels, sample.value, sample.timestamp))
    return {name: QueryOutcome(promql, samples=tuple(answers[name])) for name, promql in queries.items()}


def parse_vector(raw: Any) -> tuple[Sample, ...]:
    """Parse the ``result`` of an instant query (vector or scalar); values may be NaN/±Inf."""
    if raw is None:
        return ()
    if isinstance(raw, dict) and "value" not in raw:  # whole API body or its "data"
        data = raw.get("data", raw)
        raw = data.get("result", [])
    if isinstance(raw, list) and len(raw) == 2 and not isinstance(raw[0], dict):  # scalar
        raw = [{"metric": {}, "value": raw}]
    samples = []
    for item in raw:
        ts, text = item["value"]
        samples.append(Sample(dict(item.get("metric", {})), _to_float(text), float(ts)))
    return tuple(samples)


def _to_float(text: Any) -> float:
    try:
        return float(text)  # Prometheus sends "NaN", "+Inf", "-Inf" which float() accepts
    except (TypeError, ValueError):
        return math.nan


def scalar_value(
    outcome: QueryOutcome | None, *, scale: float = 1.0, nan_reason: str = NO_TRAFFIC
) -> tuple[float | None, str | None]:
    """The single value of an aggregated query, or (None, reason) — never a made-up zero."""
    if outcome is None:
        return None, "not queried"
    if outcome.error is not None:
        return None, f"query failed: {outcome.error}"
    if not outcome.samples:
        return None, "no data"
    value = outcome.samples[0].value
    if math.isnan(value):
        return None, nan_reason
    if math.isinf(value):
        return None, "infinite (division by zero?)"
    return value * scale, None


@dataclass
class _Builder:
    """Collects field values and reasons while assembling an Observation."""

    values: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def put(self, name: str, value: float | None, reason: str | None) -> None:
        self.values[name] = Observation.clean(value)
        if self.values[name] is None:
            self.missing[name] = reason or "no data"


def class_missing_key(name: str) -> str:
    """Key in ``Observation.missing`` for a priority class without TTFT."""
    return f"ttft_p95_by_class_s[{name}]"


def assemble_observation(
    outcomes: Mapping[str, QueryOutcome],
    *,
    now: float,
    window_s: float,
    classes: Mapping[str, int],
    stale_after_s: float,
    ready_replicas: int | None = None,
    scope: str = "",
) -> Observation:
    """Turn query outcomes into an Observation (pure; ``scope`` only enriches messages)."""
    b = _Builder()

    # --- freshness first: it decides whether any value may be presented -------------------
    stale_reason = _staleness(outcomes, now=now, stale_after_s=stale_after_s, scope=scope)

    # --- TTFT p95 with source fallback ---------------------------------------------------
    success, success_reason = scalar_value(outcomes.get(Q_SUCCESS_RATE), nan_reason="NaN")
    ttft_source: str | None = None
    hist = outcomes.get(Q_TTFT_HISTOGRAM)
    vllm = outcomes.get(Q_TTFT_VLLM)
    summary = outcomes.get(Q_TTFT_SUMMARY)
    if _has_series(hist):
        ttft_source = "histogram"
        b.put("ttft_p95_s", *scalar_value(hist, scale=1e-3))
    elif _has_series(vllm):
        ttft_source = "vllm-histogram"
        b.put("ttft_p95_s", *scalar_value(vllm))
    elif (
        summary is not None
        and summary.error is None
        and summary.samples
        and not math.isnan(summary.samples[0].value)
    ):
        ttft_source = "summary"
        b.put("ttft_p95_s", *scalar_value(summary, scale=1e-6))
    elif success is not None and success <= 0:
        b.put("ttft_p95_s", None, "no successful requests in window")
    else:
        value, reason = scalar_value(outcomes.get(Q_TTFT_COUNTERS), scale=1e-6)
        if value is not None:
            ttft_source = "counters"  # a mean, not a p95 (see module docstring)
        b.put("ttft_p95_s", value, reason)

    # --- per-class TTFT from the client/gateway histogram ---------------------------------
    by_class: dict[str, float | None] = {}
    class_outcome = outcomes.get(Q_CLASS_TTFT)
    class_samples = class_outcome.samples if class_outcome else ()
    per_label = {s.labels.get("priority_class"): s.value for s in class_samples}
    for name in classes:
        key = class_missing_key(name)
        if class_outcome is None:
            by_class[name], b.missing[key] = None, "not queried"
        elif class_outcome.error is not None:
            by_class[name], b.missing[key] = None, f"query failed: {class_outcome.error}"
        elif name not in per_label:
            by_class[name], b.missing[key] = None, f"no {CLASS_TTFT_METRIC} series for this class"
        else:
            by_class[name] = Observation.clean(per_label[name])
            if by_class[name] is None:
                b.missing[key] = "NaN (no requests of this class in window)"

    # --- retrieval at the gateway (part of the per-class TTFT, not of Triton's) -------------
    retrieval, retrieval_reason = scalar_value(outcomes.get(Q_RETRIEVAL))
    if retrieval_reason == "no data":
        retrieval_reason = f"no {RETRIEVAL_METRIC} series (gateway not scraped?)"
    b.put("retrieval_p95_s", retrieval, retrieval_reason)
    stage_outcome = outcomes.get(Q_STAGES)
    stages: dict[str, float] = {}
    if stage_outcome is not None and stage_outcome.error is None:
        for sample in stage_outcome.samples:
            stage, value = sample.labels.get("stage"), Observation.clean(sample.value)
            if stage and value is not None:
                stages[stage] = value

    # --- per-request times, rates, batching ------------------------------------------------
    b.put("queue_time_s", *scalar_value(outcomes.get(Q_QUEUE), scale=1e-6))
    b.put("compute_time_s", *scalar_value(outcomes.get(Q_COMPUTE), scale=1e-6))
    failure, failure_reason = scalar_value(outcomes.get(Q_FAILURE_RATE), nan_reason="NaN")
    if success is None:
        b.put("request_rate", None, success_reason)
        b.put("error_rate", None, success_reason)
    else:
        b.put("request_rate", success + (failure or 0.0), None)
        if failure is None:
            b.put("error_rate", None, f"failure counter: {failure_reason}")
        elif success + failure <= 0:
            b.put("error_rate", None, "no requests in window")
        else:
            b.put("error_rate", failure / (success + failure), None)
    b.put("mean_batch_size", *scalar_value(outcomes.get(Q_BATCH)))

    # --- GPU utilisation: DCGM exporter, else Triton's own GPU gauge -----------------------
    dcgm, dcgm_reason = scalar_value(outcomes.get(Q_GPU_DCGM), scale=0.01, nan_reason="NaN")
    if dcgm is not None:
        b.put("gpu_utilization", dcgm, None)
    else:
        triton_gpu, triton_reason = scalar_value(outcomes.get(Q_GPU_TRITON), nan_reason="NaN")
        reason = (
            "no GPU utilisation metric (DCGM_FI_DEV_GPU_UTIL, nv_gpu_utilization) for this selector"
            if dcgm_reason == "no data" and triton_reason == "no data"
            else f"DCGM: {dcgm_reason}; nv_gpu_utilization: {triton_reason}"
        )
        b.put("gpu_utilization", triton_gpu, reason)

    b.put("pending_requests", *scalar_value(outcomes.get(Q_PENDING)))

    # --- token means (vLLM backend counters); absent elsewhere, and then said so ------------
    for name, query, metric in (
        ("mean_prompt_tokens", Q_PROMPT_TOKENS, VLLM_PROMPT_TOKENS),
        ("mean_output_tokens", Q_OUTPUT_TOKENS, VLLM_GENERATION_TOKENS),
    ):
        value, reason = scalar_value(outcomes.get(query))
        if reason == "no data":
            reason = f"no {metric} series (not a vLLM backend?)"
        elif value is not None and value < 0:
            value, reason = None, f"negative ({value:g}): counter reset?"
        b.put(name, value, reason)

    # --- ready replicas: passed in (e.g. from the Deployment) or Triton targets up ---------
    if ready_replicas is not None:
        b.values["ready_replicas"] = ready_replicas
    else:
        ready, ready_reason = scalar_value(outcomes.get(Q_READY))
        targets, _ = scalar_value(outcomes.get(Q_TARGETS))
        if ready is None and ready_reason == "no data" and targets:
            ready, ready_reason = 0.0, None  # targets exist, none of them a live Triton
        b.put("ready_replicas", ready, ready_reason)
        if b.values["ready_replicas"] is not None:
            b.values["ready_replicas"] = int(b.values["ready_replicas"])

    # --- stale: values are not presented as current -----------------------------------------
    if stale_reason is not None:
        for name in VALUE_FIELDS:
            if name == "ready_replicas" and ready_replicas is not None:
                continue
            b.values[name] = None
            b.missing[name] = "stale"  # the why is in stale_reason
        for name in classes:
            by_class[name] = None
            b.missing[class_missing_key(name)] = "stale"
        ttft_source = None
        stages = {}

    return Observation(
        at=now,
        window_s=window_s,
        ttft_p95_by_class_s=by_class,
        stage_p95_s=stages,
        ttft_source=ttft_source,
        missing=b.missing,
        stale=stale_reason is not None,
        stale_reason=stale_reason,
        **b.values,
    )


def _has_series(outcome: QueryOutcome | None) -> bool:
    """The query answered with series: that source is the deployment's, even when its value is
    NaN (no traffic in the window) — never fall back to a source that means something else."""
    return outcome is not None and outcome.error is None and bool(outcome.samples)


def _staleness(
    outcomes: Mapping[str, QueryOutcome], *, now: float, stale_after_s: float, scope: str
) -> str | None:
    """Why the data cannot be trusted as current, or None when it is fresh."""
    unreachable = next((o for o in outcomes.values() if o.unreachable), None)
    if unreachable is not None:
        return f"Prometheus unreachable: {unreachable.error}"
    newest = outcomes.get(Q_NEWEST)
    if newest is None:
        return "freshness not queried"
    if newest.error is not None:
        return f"freshness query failed: {newest.error}"
    stamp = newest.samples[0].value if newest.samples else math.nan
    if math.isnan(stamp):
        targets, _ = scalar_value(outcomes.get(Q_TARGETS))
        up, _ = scalar_value(outcomes.get(Q_TARGETS_UP))
        where = f" for {scope}" if scope else ""
        if targets:
            return (
                f"no current {FRESHNESS_METRIC} samples{where}; "
                f"{int(up or 0)}/{int(targets)} scrape targets up"
            )
        return f"no {FRESHNESS_METRIC} samples and no scrape targets{where}"
    age = now - stamp
    if age > stale_after_s:
        return f"newest sample is {age:.1f}s old (limit {stale_after_s:g}s)"
    return None


# --------------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------------
class PrometheusMetricSource:
    """Reads Observations from a Prometheus server (the only part of this module doing I/O).

    Failures are data: an unreachable server yields a stale Observation (fail-static upstream),
    a failing query leaves its field missing with the error as the reason.
    """

    def __init__(self, url: str, *, timeout_s: float = 5.0, client: Any | None = None) -> None:
        if client is None:
            from prometheus_api_client import PrometheusConnect
            from urllib3.util.retry import Retry

            # One quick retry at most: the loop runs again next interval, and a slow retry
            # schedule (the client's default backs off for seconds) would stall every decision.
            retry = Retry(total=1, backoff_factor=0.0, status_forcelist=(502, 503, 504))
            client = PrometheusConnect(url=url, disable_ssl=True, retry=retry, timeout=timeout_s)
        self.url = url
        self.client = client
        #: Outcomes of the last observe() call, for explaining decisions and debugging.
        self.last_outcomes: dict[str, QueryOutcome] = {}

    def query(self, promql: str, at: float) -> QueryOutcome:
        """One instant query evaluated at ``at``; never raises."""
        from prometheus_api_client import PrometheusApiClientException

        try:
            raw = self.client.custom_query(promql, params={"time": f"{at:.3f}"})
        except (requests.ConnectionError, requests.Timeout) as exc:
            return QueryOutcome(promql, error=f"{self.url}: {_connection_error(exc)}", unreachable=True)
        except PrometheusApiClientException as exc:
            return QueryOutcome(promql, error=_short(exc))
        except Exception as exc:  # malformed answers etc. must not crash the control loop
            return QueryOutcome(promql, error=f"{type(exc).__name__}: {_short(exc)}")
        try:
            return QueryOutcome(promql, samples=parse_vector(raw))
        except (KeyError, TypeError, ValueError) as exc:
            return QueryOutcome(promql, error=f"unparseable answer: {_short(exc)}")

    def observe(
        self,
        selector: str,
        model: str,
        classes: Mapping[str, int],
        window_s: float,
        now: float,
        stale_after_s: float,
        *,
        ready_replicas: int | None = None,
        gpu_selector: str | None = None,
    ) -> Observation:
        """One Observation of ``model`` on the targets matching ``selector`` over ``window_s``.

        ``classes`` maps priority class names (label values of the per-class histogram) to
        Triton priority levels; every class gets an entry in ``ttft_p95_by_class_s``.
        """
        queries = build_queries(selector, model, window_s, gpu_selector=gpu_selector)
        outcomes: dict[str, QueryOutcome] = {}
        # Freshness first: if Prometheus is down, fail fast instead of timing out on the rest.
        first = self.query(queries[Q_NEWEST], now)
        outcomes[Q_NEWEST] = first
        rest = {name: promql for name, promql in queries.items() if name != Q_NEWEST}
        for group in combined_queries(rest):
            answer = (
                QueryOutcome(combine(group), error=first.error, unreachable=True)
                if first.unreachable
                else self.query(combine(group), now)
            )
            outcomes.update(split_combined(answer, group))
        self.last_outcomes = outcomes
        return assemble_observation(
            outcomes,
            now=now,
            window_s=window_s,
            classes=classes,
            stale_after_s=stale_after_s,
            ready_replicas=ready_replicas,
            scope=f"{label_matchers(selector, model=model)}",
        )

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if callable(close):
            close()


def _connection_error(exc: BaseException) -> str:
    """``Connection refused``-style text instead of urllib3's long retry message."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if match:
        return match.group(1).strip()
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return _short(exc, 120)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
