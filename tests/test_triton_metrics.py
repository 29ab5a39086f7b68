"""The Triton-compatible exporter publishes exactly the series names the metric source queries."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from phoenix_operator.local.triton_metrics import TritonMetricsServer, TritonMetricsState


def _samples(state: TritonMetricsState) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(TritonMetricsServer([state], 0).registry).decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        labels = tuple(sorted(p.split("=", 1)[0] for p in name_labels[len(name) + 1 : -1].split(",") if p))
        out[(name, labels)] = float(value)
    # The exposition must also parse as Prometheus text.
    assert list(text_string_to_metric_families(text))
    return out


def test_counters_keep_tritons_names_without_a_total_suffix() -> None:
    state = TritonMetricsState(model="chat")
    for _ in range(4):
        state.record_request(
            1.0, 0.25, 0.75, priority_class="urgent", ttft_s=0.2, prompt_tokens=100, output_tokens=10
        )
    state.record_batch(4)
    state.record_request(0.0, 0.0, 0.0, ok=False)
    samples = _samples(state)
    names = {name for name, _ in samples}
    for expected in (
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_queue_duration_us",
        "nv_inference_request_summary_us",
        "vllm:prompt_tokens_total",
        "vllm:time_to_first_token_seconds_bucket",
        "phoenix_request_ttft_seconds_bucket",
    ):
        assert expected in names, expected
    assert "nv_inference_count_total" not in names
    assert samples[("nv_inference_request_success", ("model", "version"))] == 4
    assert samples[("nv_inference_request_failure", ("model", "reason", "version"))] == 1
    assert samples[("nv_inference_queue_duration_us", ("model", "version"))] == 1_000_000
    assert samples[("vllm:prompt_tokens_total", ("model", "version"))] == 400


def test_summary_quantiles_cover_a_sliding_window_only() -> None:
    state = TritonMetricsState(model="chat", summary_window_s=60)
    state.record_request(9.0, 8.0, 1.0, at=1000.0)
    state.record_request(1.0, 0.5, 0.5, at=1100.0)
    families = {f.name: f for f in state.families(now=1100.0)}
    p95 = [
        s.value for s in families["nv_inference_request_summary_us"].samples if s.labels["quantile"] == "0.95"
    ]
    assert p95 == [1_000_000.0]  # the 9 s request left the 60 s window
