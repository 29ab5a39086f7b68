"""The Prometheus metric source: pure query building/parsing, then real Triton + real Prometheus.

The integration half runs a real tritonserver (emulated LLM, dynamic batching, two priority
levels) under open-loop load with a priority mix, scraped every second by a real Prometheus
together with the load generator's per-class TTFT histogram, and checks the Observation the
control loop would get — including the fail-static cases (Prometheus down, replica gone, old
data), where values must be missing and the observation stale, never zeros.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.prometheus import PrometheusFactory
from fixtures.triton import TritonFactory
from phoenix_operator.clients.prometheus import (
    Q_BATCH,
    Q_CLASS_TTFT,
    Q_COMPUTE,
    Q_FAILURE_RATE,
    Q_GPU_DCGM,
    Q_GPU_TRITON,
    Q_NEWEST,
    Q_OUTPUT_TOKENS,
    Q_PENDING,
    Q_PROMPT_TOKENS,
    Q_QUEUE,
    Q_READY,
    Q_RETRIEVAL,
    Q_STAGES,
    Q_SUCCESS_RATE,
    Q_TARGETS,
    Q_TARGETS_UP,
    Q_TTFT_COUNTERS,
    Q_TTFT_HISTOGRAM,
    Q_TTFT_SUMMARY,
    Q_TTFT_VLLM,
    QUERY_LABEL,
    VALUE_FIELDS,
    PrometheusMetricSource,
    QueryOutcome,
    Sample,
    assemble_observation,
    build_queries,
    class_missing_key,
    combine,
    combined_queries,
    label_matchers,
    parse_vector,
    promql_duration,
    scalar_value,
    split_combined,
)
from phoenix_operator.control.policy import check_retrieval
from phoenix_operator.local._proc import wait_for
from phoenix_operator.local.loadgen import LoadGenerator, LoadRun, TtftExporter, poisson_arrivals
from phoenix_operator.local.models import EMULATED_LLM, emulated_llm_config
from phoenix_operator.local.prometheus import LocalPrometheus, ScrapeTarget
from phoenix_operator.local.triton import LocalTriton
from phoenix_operator.observation import Observation

NOW = 1_800_000_000.0
CLASSES = {"urgent": 1, "standard": 2}
SELECTOR = 'phoenix_deployment="chat",namespace="default"'


# ============================================================================================
# Pure: query building
# ============================================================================================
def test_durations_and_label_matchers() -> None:
    assert promql_duration(30) == "30s"
    assert promql_duration(2.5) == "2500ms"
    with pytest.raises(ValueError):
        promql_duration(0)
    assert label_matchers(SELECTOR, model="m") == '{phoenix_deployment="chat",namespace="default",model="m"}'
    assert label_matchers("{" + SELECTOR + ",}") == "{" + SELECTOR + "}"
    assert label_matchers("", model='we"ird') == '{model="we\\"ird"}'
    assert label_matchers("") == ""  # `up{}` would be a PromQL syntax error
    assert "up == 1" in build_queries("", "m", 10)[Q_READY]


def test_queries_are_scoped_by_selector_model_and_window() -> None:
    queries = build_queries(SELECTOR, "llm", 30, gpu_selector='namespace="gpu-ops"')
    scoped = '{phoenix_deployment="chat",namespace="default",model="llm"}'
    for name in (Q_TTFT_HISTOGRAM, Q_TTFT_COUNTERS, Q_QUEUE, Q_COMPUTE, Q_SUCCESS_RATE, Q_BATCH, Q_NEWEST):
        assert scoped in queries[name], name
        assert "[30s]" in queries[name] or name == Q_NEWEST, name
    assert 'quantile="0.95"' in queries[Q_TTFT_SUMMARY] and scoped[:-1] in queries[Q_TTFT_SUMMARY]
    # The gateway histogram has no model label; GPU metrics use their own selector.
    assert "model=" not in queries[Q_CLASS_TTFT] and SELECTOR in queries[Q_CLASS_TTFT]
    assert 'DCGM_FI_DEV_GPU_UTIL{namespace="gpu-ops"}' in queries[Q_GPU_DCGM]
    assert 'nv_gpu_utilization{namespace="gpu-ops"}' in queries[Q_GPU_TRITON]
    assert queries[Q_COMPUTE].count("rate(") == 4  # input + infer + output, / success
    assert "histogram_quantile(0.95, sum by (le, priority_class)" in queries[Q_CLASS_TTFT]


# ============================================================================================
# Pure: parsing
# ============================================================================================
def test_queries_are_combined_in_groups_that_fit_a_url_and_split_back_by_name() -> None:
    queries = build_queries(SELECTOR, "m", 60)
    groups = combined_queries(queries, max_chars=1500)
    assert len(groups) > 1 and all(len(combine(g)) <= 1500 for g in groups)
    assert [name for g in groups for name in g] == list(queries), "every query once, in order"
    assert len(combined_queries(queries)) <= 3, "a step costs Prometheus a few requests, not twenty"

    group = {"a": "x", "b": "y", "c": "z"}
    answer = QueryOutcome(
        combine(group),
        samples=(
            Sample({QUERY_LABEL: "a", "stage": "search"}, 1.0, NOW),
            Sample({QUERY_LABEL: "a", "stage": "embed"}, 2.0, NOW),
            Sample({QUERY_LABEL: "b"}, 3.0, NOW),
        ),
    )
    split = split_combined(answer, group)
    assert split["a"] == QueryOutcome(
        "x", samples=(Sample({"stage": "search"}, 1.0, NOW), Sample({"stage": "embed"}, 2.0, NOW))
    )
    assert split["b"].samples == (Sample({}, 3.0, NOW),) and split["b"].query == "y"
    assert split["c"] == QueryOutcome("z"), "no series: an empty answer, not an error"
    failed = split_combined(QueryOutcome(combine(group), error="timeout", unreachable=True), group)
    assert {n: (o.error, o.unreachable) for n, o in failed.items()} == dict.fromkeys(group, ("timeout", True))


def test_parse_vector_scalar_body_and_special_values() -> None:
    vector = [
        {"metric": {"pod": "a"}, "value": [NOW, "1.5"]},
        {"metric": {"pod": "b"}, "value": [NOW, "NaN"]},
        {"metric": {"pod": "c"}, "value": [NOW, "+Inf"]},
    ]
    samples = parse_vector(vector)
    assert samples[0] == Sample({"pod": "a"}, 1.5, NOW)
    assert math.isnan(samples[1].value) and math.isinf(samples[2].value)
    assert parse_vector([NOW, "2"]) == (Sample({}, 2.0, NOW),)
    body = parse_vector({"status": "success", "data": {"resultType": "vector", "result": vector}})
    assert [s.labels for s in body] == [s.labels for s in samples] and body[0] == samples[0]
    assert parse_vector([]) == () and parse_vector(None) == ()


def test_scalar_value_never_invents_a_zero() -> None:
    q = "q"
    assert scalar_value(QueryOutcome(q, (Sample({}, 2e6, NOW),)), scale=1e-6) == (2.0, None)
    assert scalar_value(QueryOutcome(q)) == (None, "no data")
    assert scalar_value(QueryOutcome(q, (Sample({}, math.nan, NOW),)))[1] == "NaN (no requests in window)"
    assert scalar_value(QueryOutcome(q, (Sample({}, math.inf, NOW),)))[0] is None
    assert scalar_value(QueryOutcome(q, error="HTTP 400")) == (None, "query failed: HTTP 400")
    assert scalar_value(None) == (None, "not queried")


# ============================================================================================
# Pure: assembling Observations
# ============================================================================================
Value = float | None | str  # float: one sample; None: empty vector; str: query error


def outcomes(
    values: Mapping[str, Value] | None = None, *, classes: Mapping[str, float] | None = None
) -> dict[str, QueryOutcome]:
    """Query outcomes for a healthy single-replica deployment, overridden per query name."""
    base: dict[str, Value] = {
        Q_TTFT_HISTOGRAM: None,
        Q_TTFT_SUMMARY: 250_000.0,  # us
        Q_TTFT_COUNTERS: 120_000.0,
        Q_QUEUE: 40_000.0,
        Q_COMPUTE: 60_000.0,
        Q_SUCCESS_RATE: 9.0,
        Q_FAILURE_RATE: 1.0,
        Q_BATCH: 3.5,
        Q_GPU_DCGM: None,
        Q_GPU_TRITON: None,
        Q_PENDING: 4.0,
        Q_READY: 2.0,
        Q_TARGETS: 3.0,
        Q_TARGETS_UP: 3.0,
        Q_NEWEST: NOW - 1.0,
    }
    base.update(values or {})
    out: dict[str, QueryOutcome] = {}
    for name, value in base.items():
        if isinstance(value, str):
            out[name] = QueryOutcome(name, error=value)
        elif value is None:
            out[name] = QueryOutcome(name)
        else:
            out[name] = QueryOutcome(name, (Sample({}, value, NOW),))
    out[Q_CLASS_TTFT] = QueryOutcome(
        Q_CLASS_TTFT,
        tuple(
            Sample({"priority_class": c}, v, NOW)
            for c, v in (classes or {"urgent": 0.4, "standard": 1.2}).items()
        ),
    )
    return out


def observe(found: Mapping[str, QueryOutcome], **kwargs: object) -> Observation:
    args: dict[str, object] = {"now": NOW, "window_s": 30.0, "classes": CLASSES, "stale_after_s": 15.0}
    args.update(kwargs)
    return assemble_observation(found, **args)  # type: ignore[arg-type]


def test_summary_fallback_and_derived_figures() -> None:
    obs = observe(outcomes())
    assert obs.ttft_source == "summary" and obs.ttft_p95_s == pytest.approx(0.25)
    assert obs.ttft_p95_by_class_s == {"urgent": 0.4, "standard": 1.2}
    assert obs.queue_time_s == pytest.approx(0.04) and obs.compute_time_s == pytest.approx(0.06)
    assert obs.request_rate == pytest.approx(10.0) and obs.error_rate == pytest.approx(0.1)
    assert obs.mean_batch_size == 3.5 and obs.pending_requests == 4.0 and obs.ready_replicas == 2
    assert obs.gpu_utilization is None and "DCGM_FI_DEV_GPU_UTIL" in obs.missing["gpu_utilization"]
    assert not obs.stale and obs.usable


def test_histogram_is_preferred_and_its_nan_is_not_replaced_by_the_summary() -> None:
    obs = observe(outcomes({Q_TTFT_HISTOGRAM: 2800.0}))  # ms
    assert obs.ttft_source == "histogram" and obs.ttft_p95_s == pytest.approx(2.8)
    idle = observe(outcomes({Q_TTFT_HISTOGRAM: math.nan}))
    assert idle.ttft_p95_s is None and idle.ttft_source == "histogram"
    assert idle.missing["ttft_p95_s"] == "NaN (no requests in window)"


def test_counter_ratio_is_the_last_fallback_and_says_so() -> None:
    obs = observe(outcomes({Q_TTFT_SUMMARY: None}))
    assert obs.ttft_source == "counters" and obs.ttft_p95_s == pytest.approx(0.12)
    nan_summary = observe(outcomes({Q_TTFT_SUMMARY: math.nan}))
    assert nan_summary.ttft_source == "counters"


def test_no_traffic_is_missing_not_zero() -> None:
    obs = observe(
        outcomes(
            {
                Q_TTFT_SUMMARY: None,
                Q_TTFT_COUNTERS: math.nan,
                Q_SUCCESS_RATE: 0.0,
                Q_FAILURE_RATE: 0.0,
                Q_QUEUE: math.nan,
                Q_COMPUTE: math.nan,
                Q_BATCH: math.nan,
            },
            classes={"urgent": math.nan},
        )
    )
    assert obs.request_rate == 0.0  # a true zero: Prometheus saw the counters stand still
    for name in ("ttft_p95_s", "queue_time_s", "compute_time_s", "mean_batch_size", "error_rate"):
        assert getattr(obs, name) is None and obs.missing[name], name
    assert obs.ttft_source is None and "no successful requests" in obs.missing["ttft_p95_s"]
    assert obs.ttft_p95_by_class_s == {"urgent": None, "standard": None}
    assert "NaN" in obs.missing[class_missing_key("urgent")]
    assert "no phoenix_request_ttft_seconds series" in obs.missing[class_missing_key("standard")]
    assert not obs.idle and not obs.usable  # 4 requests still pending: stuck, not idle


#: (id, query answers, idle?, usable?): zero load is fresh counters standing still, nothing else.
IDLE_TABLE: list[tuple[str, dict[str, Value], bool, bool]] = [
    ("no-requests", {Q_SUCCESS_RATE: 0.0, Q_FAILURE_RATE: 0.0, Q_PENDING: 0.0}, True, True),
    ("no-pending-gauge", {Q_SUCCESS_RATE: 0.0, Q_FAILURE_RATE: None, Q_PENDING: None}, True, True),
    (
        "histogram-nan",
        {Q_TTFT_HISTOGRAM: math.nan, Q_SUCCESS_RATE: 0.0, Q_FAILURE_RATE: 0.0, Q_PENDING: 0.0},
        True,
        True,
    ),
    ("stuck-queue", {Q_SUCCESS_RATE: 0.0, Q_FAILURE_RATE: 0.0, Q_PENDING: 3.0}, False, False),
    ("only-failures", {Q_SUCCESS_RATE: 0.0, Q_FAILURE_RATE: 2.0, Q_PENDING: 0.0}, False, False),
    ("counters-missing", {Q_SUCCESS_RATE: None, Q_FAILURE_RATE: None, Q_PENDING: 0.0}, False, False),
    (
        "old-scrape",
        {Q_SUCCESS_RATE: 0.0, Q_FAILURE_RATE: 0.0, Q_PENDING: 0.0, Q_NEWEST: NOW - 60.0},
        False,
        False,
    ),
    ("no-scrape", {Q_SUCCESS_RATE: 0.0, Q_PENDING: 0.0, Q_NEWEST: None}, False, False),
    ("traffic", {}, False, True),
]


@pytest.mark.parametrize(
    ("answers", "idle", "usable"), [c[1:] for c in IDLE_TABLE], ids=[c[0] for c in IDLE_TABLE]
)
def test_idle_is_fresh_counters_standing_still(answers: dict[str, Value], idle: bool, usable: bool) -> None:
    # The summary only answers for replicas that served requests in the window (see build_queries).
    no_ttft: dict[str, Value] = {Q_TTFT_SUMMARY: None, Q_TTFT_COUNTERS: math.nan} if answers else {}
    obs = observe(outcomes(no_ttft | answers, classes={}))
    assert (obs.idle, obs.usable) == (idle, usable), obs
    if idle:
        assert obs.request_rate == 0.0 and obs.ttft_p95_s is None and not obs.stale


def test_gpu_utilisation_sources() -> None:
    assert observe(outcomes({Q_GPU_DCGM: 55.0, Q_GPU_TRITON: 0.9})).gpu_utilization == pytest.approx(0.55)
    assert observe(outcomes({Q_GPU_TRITON: 0.3})).gpu_utilization == pytest.approx(0.3)
    failed = observe(outcomes({Q_GPU_DCGM: "HTTP 503"}))
    assert failed.gpu_utilization is None and "HTTP 503" in failed.missing["gpu_utilization"]


def test_ready_replicas_passed_in_or_counted() -> None:
    assert observe(outcomes(), ready_replicas=5).ready_replicas == 5
    assert observe(outcomes({Q_READY: None})).ready_replicas == 0  # targets exist, none serving
    none = observe(outcomes({Q_READY: None, Q_TARGETS: None}))
    assert none.ready_replicas is None and none.missing["ready_replicas"] == "no data"


def test_failed_query_marks_only_its_field() -> None:
    obs = observe(outcomes({Q_QUEUE: "HTTP 422 bad_data"}))
    assert obs.queue_time_s is None and obs.missing["queue_time_s"] == "query failed: HTTP 422 bad_data"
    assert obs.ttft_p95_s is not None and not obs.stale


def test_stale_by_age_blanks_every_value() -> None:
    obs = observe(outcomes({Q_NEWEST: NOW - 60.0}), ready_replicas=3)
    assert obs.stale and obs.stale_reason == "newest sample is 60.0s old (limit 15s)"
    for name in VALUE_FIELDS:
        if name != "ready_replicas":
            assert getattr(obs, name) is None and obs.missing[name] == "stale", name
    assert obs.ready_replicas == 3  # passed in from Kubernetes, not from the stale data
    assert obs.ttft_p95_by_class_s == {"urgent": None, "standard": None} and obs.ttft_source is None
    assert not obs.usable


def test_stale_when_no_series_or_unreachable() -> None:
    down = observe(outcomes({Q_NEWEST: None, Q_TARGETS_UP: 0.0}), scope="{x}")
    assert (
        down.stale
        and down.stale_reason == "no current nv_inference_count samples for {x}; 0/3 scrape targets up"
    )
    nothing = observe(outcomes({Q_NEWEST: None, Q_TARGETS: None}))
    assert nothing.stale and "no scrape targets" in (nothing.stale_reason or "")
    found = outcomes()
    found = {
        k: QueryOutcome(v.query, error="http://p: Connection refused", unreachable=True)
        for k, v in found.items()
    }
    gone = observe(found)
    assert gone.stale and gone.stale_reason == "Prometheus unreachable: http://p: Connection refused"
    assert all(getattr(gone, name) is None for name in VALUE_FIELDS)


_values = st.one_of(
    st.none(),
    st.just("boom"),
    st.floats(allow_nan=True, allow_infinity=True, min_value=None, max_value=None),
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            name: _values
            for name in (
                Q_TTFT_HISTOGRAM,
                Q_TTFT_SUMMARY,
                Q_TTFT_COUNTERS,
                Q_QUEUE,
                Q_COMPUTE,
                Q_SUCCESS_RATE,
                Q_FAILURE_RATE,
                Q_BATCH,
                Q_GPU_DCGM,
                Q_GPU_TRITON,
                Q_PENDING,
                Q_READY,
                Q_TARGETS,
                Q_TARGETS_UP,
            )
        }
    ),
    st.one_of(st.none(), st.floats(min_value=NOW - 100, max_value=NOW)),
    st.dictionaries(st.sampled_from(["urgent", "standard"]), st.floats(allow_nan=True)),
)
def test_any_answer_gives_no_nan_and_a_reason_for_every_gap(
    values: dict[str, Value], newest: float | None, classes: dict[str, float]
) -> None:
    obs = observe(outcomes({**values, Q_NEWEST: newest}, classes=classes))
    for name in VALUE_FIELDS:
        value = getattr(obs, name)
        assert value is None or math.isfinite(value), name
        if value is None:
            assert obs.missing.get(name), name
    for name, value in obs.ttft_p95_by_class_s.items():
        assert value is None or math.isfinite(value)
        if value is None:
            assert obs.missing.get(class_missing_key(name))
    assert obs.ttft_source in (None, "histogram", "summary", "counters")
    assert obs.stale == (obs.stale_reason is not None)
    if obs.stale:
        assert all(getattr(obs, n) is None for n in VALUE_FIELDS)


# ============================================================================================
# Pure: the vLLM backend's series (TTFT histogram, token counters)
# ============================================================================================
def test_vllm_queries_are_scoped_and_divide_tokens_by_requests() -> None:
    queries = build_queries(SELECTOR, "llm", 30)
    scoped = '{phoenix_deployment="chat",namespace="default",model="llm"}'
    assert queries[Q_TTFT_VLLM] == (
        f"histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{scoped}[30s])))"
    )
    success = f"sum(rate(nv_inference_request_success{scoped}[30s]))"
    assert queries[Q_PROMPT_TOKENS] == f"sum(rate(vllm:prompt_tokens_total{scoped}[30s])) / {success}"
    assert queries[Q_OUTPUT_TOKENS] == f"sum(rate(vllm:generation_tokens_total{scoped}[30s])) / {success}"
    assert "[15s]" in build_queries("", "m", 15)[Q_TTFT_VLLM]


def test_vllm_histogram_comes_after_tritons_and_before_the_summary() -> None:
    vllm = observe(outcomes({Q_TTFT_VLLM: 1.7}))  # seconds, not ms
    assert vllm.ttft_source == "vllm-histogram" and vllm.ttft_p95_s == pytest.approx(1.7)
    both = observe(outcomes({Q_TTFT_HISTOGRAM: 2800.0, Q_TTFT_VLLM: 1.7}))
    assert both.ttft_source == "histogram" and both.ttft_p95_s == pytest.approx(2.8)
    # Series exist but the window had no traffic: TTFT is missing, not the request latency
    # (for a decoupled model that is the whole generation).
    idle = observe(outcomes({Q_TTFT_VLLM: math.nan}))
    assert idle.ttft_p95_s is None and idle.ttft_source == "vllm-histogram"
    assert idle.missing["ttft_p95_s"] == "NaN (no requests in window)"
    # No vLLM series, or a failed query: the summary as before.
    for absent in (None, "HTTP 422 bad_data"):
        fallback = observe(outcomes({Q_TTFT_VLLM: absent}))
        assert fallback.ttft_source == "summary" and fallback.ttft_p95_s == pytest.approx(0.25)


def test_token_means_from_the_vllm_counters() -> None:
    obs = observe(outcomes({Q_PROMPT_TOKENS: 1020.5, Q_OUTPUT_TOKENS: 129.0}))
    assert obs.mean_prompt_tokens == pytest.approx(1020.5) and obs.mean_output_tokens == 129.0
    assert "mean_prompt_tokens" not in obs.missing and "mean_output_tokens" not in obs.missing


def test_token_means_are_missing_with_a_reason_never_zero() -> None:
    absent = observe(outcomes({Q_PROMPT_TOKENS: None, Q_OUTPUT_TOKENS: None}))
    assert absent.mean_prompt_tokens is None and absent.mean_output_tokens is None
    assert absent.missing["mean_prompt_tokens"] == "no vllm:prompt_tokens_total series (not a vLLM backend?)"
    assert "vllm:generation_tokens_total" in absent.missing["mean_output_tokens"]
    idle = observe(outcomes({Q_PROMPT_TOKENS: math.nan, Q_OUTPUT_TOKENS: math.inf}))
    assert (
        idle.mean_prompt_tokens is None
        and idle.missing["mean_prompt_tokens"] == "NaN (no requests in window)"
    )
    assert idle.mean_output_tokens is None and idle.missing["mean_output_tokens"]
    failed = observe(outcomes({Q_PROMPT_TOKENS: "HTTP 503", Q_OUTPUT_TOKENS: -5.0}))
    assert failed.missing["mean_prompt_tokens"] == "query failed: HTTP 503"
    assert failed.mean_output_tokens is None and "counter reset" in failed.missing["mean_output_tokens"]
    assert observe(outcomes()).missing["mean_prompt_tokens"] == "not queried"
    # Still usable: the policy counts requests without token means.
    assert absent.usable


def test_stale_data_blanks_the_token_means_too() -> None:
    obs = observe(
        outcomes({Q_NEWEST: NOW - 60.0, Q_PROMPT_TOKENS: 900.0, Q_OUTPUT_TOKENS: 100.0, Q_TTFT_VLLM: 1.0})
    )
    assert obs.stale and obs.mean_prompt_tokens is None and obs.mean_output_tokens is None
    assert obs.missing["mean_prompt_tokens"] == "stale" and obs.ttft_source is None


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries({name: _values for name in (Q_TTFT_HISTOGRAM, Q_TTFT_VLLM, Q_TTFT_SUMMARY)}),
    st.fixed_dictionaries({name: _values for name in (Q_PROMPT_TOKENS, Q_OUTPUT_TOKENS)}),
)
def test_any_vllm_answer_gives_a_known_source_and_finite_token_means(
    ttft: dict[str, Value], tokens: dict[str, Value]
) -> None:
    obs = observe(outcomes({**ttft, **tokens}))
    assert obs.ttft_source in (None, "histogram", "vllm-histogram", "summary", "counters")
    if isinstance(ttft[Q_TTFT_HISTOGRAM], float):
        assert obs.ttft_source == "histogram"
    elif isinstance(ttft[Q_TTFT_VLLM], float):
        assert obs.ttft_source == "vllm-histogram"
    for name in ("mean_prompt_tokens", "mean_output_tokens"):
        value = getattr(obs, name)
        assert value is None or (math.isfinite(value) and value >= 0), name
        if value is None:
            assert obs.missing.get(name), name


# ============================================================================================
# Pure: the gateway's retrieval and stage histograms
# ============================================================================================
def test_retrieval_and_stage_queries_are_scoped_quantiles_over_rates() -> None:
    queries = build_queries(SELECTOR, "llm", 30)
    assert queries[Q_RETRIEVAL] == (
        "histogram_quantile(0.95, sum by (le) "
        f"(rate(phoenix_gateway_retrieval_seconds_bucket{{{SELECTOR}}}[30s])))"
    )
    assert queries[Q_STAGES] == (
        "histogram_quantile(0.95, sum by (le, stage) "
        f"(rate(phoenix_gateway_stage_seconds_bucket{{{SELECTOR}}}[30s])))"
    )
    # The per-class TTFT is the gateway's too (client-side, retrieval included).
    assert f"phoenix_request_ttft_seconds_bucket{{{SELECTOR}}}[30s]" in queries[Q_CLASS_TTFT]


def _gateway(retrieval: Value, stages: Mapping[str, float] | str | None) -> dict[str, QueryOutcome]:
    found = outcomes({Q_RETRIEVAL: retrieval})
    if isinstance(stages, str):
        found[Q_STAGES] = QueryOutcome(Q_STAGES, error=stages)
    elif stages is not None:
        found[Q_STAGES] = QueryOutcome(
            Q_STAGES, tuple(Sample({"stage": k}, v, NOW) for k, v in stages.items())
        )
    return found


@pytest.mark.parametrize(
    ("retrieval", "stages", "value", "reason", "stage_p95"),
    [
        (0.92, {"embed": 0.08, "search": 0.85}, 0.92, None, {"embed": 0.08, "search": 0.85}),
        # An idle stage is NaN: left out, never a zero.
        (0.2, {"embed": 0.1, "search": math.nan}, 0.2, None, {"embed": 0.1}),
        (math.nan, None, None, "NaN (no requests in window)", {}),
        (None, None, None, "no phoenix_gateway_retrieval_seconds series (gateway not scraped?)", {}),
        ("HTTP 400: bad query", "HTTP 400", None, "query failed: HTTP 400: bad query", {}),
    ],
)
def test_retrieval_figures_from_query_answers(
    retrieval: Value,
    stages: Mapping[str, float] | str | None,
    value: float | None,
    reason: str | None,
    stage_p95: dict[str, float],
) -> None:
    obs = observe(_gateway(retrieval, stages))
    assert obs.retrieval_p95_s == value
    assert obs.missing.get("retrieval_p95_s") == reason
    assert dict(obs.stage_p95_s) == stage_p95


def test_stale_data_blanks_retrieval_too() -> None:
    obs = observe(_gateway(0.92, {"search": 0.85}), now=NOW + 600)
    assert obs.stale and obs.retrieval_p95_s is None and obs.stage_p95_s == {}
    assert obs.missing["retrieval_p95_s"] == "stale"


# ============================================================================================
# Real Triton scraped by real Prometheus under load
# ============================================================================================
RATE = 60.0
MIX = {"urgent": 0.3, "standard": 0.7}
WINDOW_S = 5.0
CONFIG = emulated_llm_config(
    max_batch_size=16,
    step_base_ms=20,
    step_per_row_ms=2,
    dynamic_batching="""\
dynamic_batching {
  max_queue_delay_microseconds: 20000
  priority_levels: 2
  default_priority_level: 2
}""",
)


@dataclass
class Stack:
    triton: LocalTriton
    doomed: LocalTriton
    prometheus: LocalPrometheus
    run: LoadRun
    source: PrometheusMetricSource


@pytest.fixture(scope="module")
def stack(
    module_triton_factory: TritonFactory, module_prometheus_factory: PrometheusFactory
) -> Iterator[Stack]:
    """Triton under load + gateway histogram + a second deployment ('doomed'), all scraped."""
    with ThreadPoolExecutor(max_workers=2) as pool:  # two ~1.5 s start-ups side by side
        triton, doomed = pool.map(lambda _: module_triton_factory(CONFIG), range(2))
    exporter = TtftExporter()
    labels = {"phoenix_deployment": "chat", "namespace": "default"}
    prometheus = module_prometheus_factory(
        [
            ScrapeTarget(triton.metrics_target, {**labels, "pod": "triton-0"}, job="triton"),
            ScrapeTarget(exporter.target, {**labels, "pod": "gateway-0"}, job="gateway"),
            ScrapeTarget(
                doomed.metrics_target,
                {"phoenix_deployment": "doomed", "namespace": "default", "pod": "doomed-0"},
                job="triton",
            ),
        ],
        scrape_interval_s=1.0,
    )
    generator = LoadGenerator(triton.http_url, EMULATED_LLM, CLASSES, exporter=exporter)
    run = generator.start(poisson_arrivals(RATE, 120, MIX, seed=5))  # stopped at teardown
    source = PrometheusMetricSource(prometheus.url)
    try:
        prometheus.wait_for_targets_up(timeout_s=30)
        # rate() needs the whole window covered by scrapes taken under load: a series that starts
        # inside the window is under-extrapolated (seen: 44 instead of 60 req/s).
        samples = int(WINDOW_S) + 1
        prometheus.wait_for_samples('nv_inference_count{phoenix_deployment="chat"}', samples=samples)
        prometheus.wait_for_samples(
            'phoenix_request_ttft_seconds_count{priority_class="urgent"}', samples=samples
        )
        yield Stack(triton, doomed, prometheus, run, source)
    finally:
        run.stop()
        run.wait(60)
        source.close()
        exporter.close()


@pytest.fixture(scope="module")
def live(stack: Stack) -> Observation:
    began = time.monotonic()
    obs = stack.source.observe(SELECTOR, EMULATED_LLM, CLASSES, WINDOW_S, time.time(), stale_after_s=5)
    print(f"observe() took {1000 * (time.monotonic() - began):.0f} ms: {obs}")
    return obs


@pytest.mark.triton
@pytest.mark.prometheus
def test_combined_queries_answer_as_each_query_alone(stack: Stack) -> None:
    """Prometheus evaluates the combined expressions exactly as it does each query on its own."""
    at = time.time()
    queries = build_queries(SELECTOR, EMULATED_LLM, WINDOW_S)
    combined: dict[str, QueryOutcome] = {}
    for group in combined_queries(queries):
        combined.update(split_combined(stack.source.query(combine(group), at), group))
    answered = 0
    for name, promql in queries.items():
        alone = stack.source.query(promql, at)
        assert alone.error is None and combined[name].error is None, (name, alone.error, combined[name].error)

        def values(outcome: QueryOutcome) -> list[tuple[tuple[tuple[str, str], ...], float]]:
            return sorted((tuple(sorted(s.labels.items())), s.value) for s in outcome.samples)

        got, want = values(combined[name]), values(alone)
        assert [labels for labels, _ in got] == [labels for labels, _ in want], name
        assert all(math.isclose(a, b, rel_tol=1e-9) or (math.isnan(a) and math.isnan(b))
                   for (_, a), (_, b) in zip(got, want, strict=True)), (name, got, want)  # fmt: skip
        answered += bool(want)
    assert answered >= 8, "most queries have series under load: the comparison compared something"


@pytest.mark.triton
@pytest.mark.prometheus
def test_live_ttft_comes_from_the_summary_fallback(live: Observation) -> None:
    assert not live.stale, live.stale_reason
    assert live.ttft_source == "summary"
    assert live.ttft_p95_s is not None and 0.02 < live.ttft_p95_s < 2.0
    assert live.usable


@pytest.mark.triton
@pytest.mark.prometheus
def test_live_per_class_ttft_comes_from_the_client_histogram(live: Observation) -> None:
    for name in CLASSES:
        value = live.ttft_p95_by_class_s[name]
        assert value is not None and 0.02 < value < 3.0, (name, live.missing)


@pytest.mark.triton
@pytest.mark.prometheus
def test_live_queue_compute_rate_batch_and_errors(live: Observation) -> None:
    assert live.queue_time_s is not None and 0 < live.queue_time_s < 1.0
    # Every request is charged its batch's whole execute(): at least a = 20 ms.
    assert live.compute_time_s is not None and 0.02 <= live.compute_time_s < 1.0
    assert live.request_rate is not None and 0.5 * RATE < live.request_rate < 1.5 * RATE
    assert live.mean_batch_size is not None and live.mean_batch_size > 1.0
    assert live.error_rate == 0.0  # requests flowed, none failed: a real zero
    assert live.pending_requests is not None and live.pending_requests >= 0
    assert live.ready_replicas == 1  # the gateway target shares the labels but is no Triton


@pytest.mark.triton
@pytest.mark.prometheus
def test_live_gpu_utilisation_is_explicitly_missing_on_cpu(live: Observation) -> None:
    assert live.gpu_utilization is None
    assert "no GPU utilisation metric" in live.missing["gpu_utilization"]


@pytest.mark.triton
@pytest.mark.prometheus
def test_old_data_is_stale(stack: Stack) -> None:
    # Evaluated a minute ahead, Prometheus still returns the samples (5 min lookback), but the
    # newest is ~60 s old: the source must call it stale rather than serve it as current.
    obs = stack.source.observe(SELECTOR, EMULATED_LLM, CLASSES, WINDOW_S, time.time() + 60, stale_after_s=10)
    assert obs.stale and "old (limit 10s)" in (obs.stale_reason or "")
    assert obs.ttft_p95_s is None and obs.missing["ttft_p95_s"] == "stale"


@pytest.mark.triton
@pytest.mark.prometheus
def test_unknown_deployment_is_stale_not_zero(stack: Stack) -> None:
    obs = stack.source.observe('phoenix_deployment="nope"', EMULATED_LLM, CLASSES, WINDOW_S, time.time(), 5)
    assert obs.stale and "no scrape targets" in (obs.stale_reason or "")
    assert obs.request_rate is None and obs.ready_replicas is None


@pytest.mark.triton
@pytest.mark.prometheus
def test_dead_replica_makes_its_deployment_stale(stack: Stack) -> None:
    selector = 'phoenix_deployment="doomed"'
    before = stack.source.observe(selector, EMULATED_LLM, CLASSES, WINDOW_S, time.time(), 5)
    assert not before.stale and before.ready_replicas == 1 and before.request_rate == 0.0
    stack.doomed.kill()
    wait_for(
        lambda: stack.prometheus.query(f"up{{{selector}}} == 0"),
        15,
        what="Prometheus to see the killed replica down",
    )
    obs = stack.source.observe(selector, EMULATED_LLM, CLASSES, WINDOW_S, time.time(), 5)
    assert obs.stale and obs.stale_reason is not None and "0/1 scrape targets up" in obs.stale_reason
    assert obs.ready_replicas is None and obs.missing["ready_replicas"] == "stale"


@pytest.mark.prometheus
def test_stopped_prometheus_gives_a_stale_observation(prometheus_factory: PrometheusFactory) -> None:
    prometheus = prometheus_factory([])
    source = PrometheusMetricSource(prometheus.url)
    empty = source.observe(SELECTOR, EMULATED_LLM, CLASSES, WINDOW_S, time.time(), 5)
    assert empty.stale and "unreachable" not in (empty.stale_reason or "")  # up, but nothing scraped
    prometheus.stop()
    began = time.monotonic()
    obs = source.observe(SELECTOR, EMULATED_LLM, CLASSES, WINDOW_S, time.time(), 5, ready_replicas=2)
    took = time.monotonic() - began
    source.close()
    assert obs.stale and obs.stale_reason is not None
    assert obs.stale_reason.startswith("Prometheus unreachable") and "Connection refused" in obs.stale_reason
    assert all(getattr(obs, n) is None for n in VALUE_FIELDS if n != "ready_replicas")
    assert obs.ready_replicas == 2 and not obs.usable
    assert took < 2.0, f"fail-static took {took:.1f}s"  # one fast failure, not 16 slow retries


# ============================================================================================
# The gateway's histograms scraped by real Prometheus
# ============================================================================================
class GatewayExporter:
    """The gateway's histograms (names and labels as the gateway exports them) on a free port.

    Each tick records nine fast requests and one slow one, so the p95 falls halfway into the
    slow bucket: with bucket bounds at ``slow - 0.01`` and ``slow + 0.01`` it *is* the slow value.
    """

    #: Fine below 100 ms, and bounds 10 ms either side of each slow figure below.
    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.79, 0.81, 0.91, 0.93, 1.59, 1.61, 2.5, 5.0)
    RETRIEVAL_SLOW = 0.92
    SEARCH_SLOW = 0.80
    EMBED_FAST = 0.02
    #: Over the urgent class's 1.5 s target by less than retrieval's excess (0.92 - 0.75 s).
    URGENT_SLOW = 1.60

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server

        self.registry = CollectorRegistry()
        self.retrieval = Histogram(
            "phoenix_gateway_retrieval_seconds",
            "embed + search",
            buckets=self.BUCKETS,
            registry=self.registry,
        )
        self.stages = Histogram(
            "phoenix_gateway_stage_seconds",
            "per stage",
            ["stage", "priority_class"],
            buckets=self.BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "phoenix_request_ttft_seconds",
            "client TTFT",
            ["priority_class"],
            buckets=self.BUCKETS,
            registry=self.registry,
        )
        # Freshness comes from Triton's per-model counter; a gauge exports the same name.
        self.freshness = Gauge("nv_inference_count", "requests", ["model"], registry=self.registry)
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.target = f"127.0.0.1:{self._server.server_port}"
        self._stop = threading.Event()
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        served = 0
        while not self._stop.wait(0.05):
            for slow in (*[False] * 9, True):
                self.retrieval.observe(self.RETRIEVAL_SLOW if slow else 0.05)
                self.stages.labels("search", "standard").observe(self.SEARCH_SLOW if slow else 0.03)
                self.stages.labels("embed", "standard").observe(self.EMBED_FAST)
                self.ttft.labels("urgent").observe(self.URGENT_SLOW if slow else 0.3)
            served += 10
            self.freshness.labels(EMULATED_LLM).set(served)

    def close(self) -> None:
        self._stop.set()
        self._feeder.join(timeout=5)
        self._server.shutdown()
        self._server.server_close()


@pytest.mark.prometheus
def test_real_prometheus_gives_the_retrieval_and_class_p95(prometheus_factory: PrometheusFactory) -> None:
    exporter = GatewayExporter()
    try:
        labels = {"phoenix_deployment": "chat", "namespace": "default"}
        prometheus = prometheus_factory([ScrapeTarget(exporter.target, labels, job="gateway")])
        prometheus.wait_for_targets_up(timeout_s=30)
        prometheus.wait_for_samples(
            'phoenix_gateway_retrieval_seconds_count{phoenix_deployment="chat"}', samples=int(WINDOW_S) + 2
        )
        source = PrometheusMetricSource(prometheus.url)
        obs = source.observe(SELECTOR, EMULATED_LLM, {"urgent": 1}, WINDOW_S, time.time(), stale_after_s=5)
        source.close()
    finally:
        exporter.close()
    assert not obs.stale, obs.stale_reason
    assert obs.retrieval_p95_s == pytest.approx(GatewayExporter.RETRIEVAL_SLOW, abs=0.005)
    assert obs.stage_p95_s["search"] == pytest.approx(GatewayExporter.SEARCH_SLOW, abs=0.005)
    # Every embed in one bucket (0.01, 0.025]: the p95 is interpolated 95 % into it.
    assert obs.stage_p95_s["embed"] == pytest.approx(0.01 + 0.95 * 0.015, abs=0.001)
    assert obs.ttft_p95_by_class_s["urgent"] == pytest.approx(GatewayExporter.URGENT_SLOW, abs=0.005)
    check = check_retrieval(obs.retrieval_p95_s, 3.0, 0.25, obs.stage_p95_s)
    assert check.slow is True
    assert check.message.startswith("retrieval p95 0.92 s is 31 % of the 3 s TTFT target (limit 25 %)")
    assert "the search stage is the slow one" in check.message


@pytest.mark.prometheus
def test_real_prometheus_scraping_an_idle_triton_says_idle_not_stale(
    prometheus_factory: PrometheusFactory,
) -> None:
    """Triton-compatible counters that served requests earlier and now stand still: the
    observation is idle (fresh, zero load) and usable; once the exporter is gone it is stale."""
    from phoenix_operator.cluster.ports import pick_ports
    from phoenix_operator.local.triton_metrics import TritonMetricsServer, TritonMetricsState

    state = TritonMetricsState(model=EMULATED_LLM)
    for _ in range(50):  # traffic before the window: the counters exist and are non-zero
        state.record_request(request_s=0.2, queue_s=0.05, compute_s=0.15)
        state.record_batch(1)
    (port,) = pick_ports(1)
    labels = {"phoenix_deployment": "chat", "namespace": "default"}
    server = TritonMetricsServer([state], port).start()
    try:
        prometheus = prometheus_factory([ScrapeTarget(f"127.0.0.1:{port}", labels, job="triton")])
        prometheus.wait_for_targets_up(timeout_s=30)
        prometheus.wait_for_samples(
            f'nv_inference_count{{phoenix_deployment="chat",model="{EMULATED_LLM}"}}',
            samples=int(WINDOW_S) + 2,
        )
        source = PrometheusMetricSource(prometheus.url)
        obs = source.observe(SELECTOR, EMULATED_LLM, {}, WINDOW_S, time.time(), stale_after_s=5)
    finally:
        server.stop()
    assert not obs.stale, obs.stale_reason
    assert obs.idle and obs.usable, obs
    assert obs.request_rate == 0.0 and obs.ttft_p95_s is None and obs.pending_requests == 0.0
    # The exporter gone: Prometheus marks its series stale, and so is the observation.
    gone = wait_for(
        lambda: (
            (o := source.observe(SELECTOR, EMULATED_LLM, {}, WINDOW_S, time.time(), stale_after_s=5)).stale
            and o
        ),
        30,
        interval_s=1.0,
        what="a stale observation",
    )
    source.close()
    assert not gone.idle and not gone.usable
