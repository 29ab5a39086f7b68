"""The local Prometheus launcher: config rendering, scraping with extra labels, reload, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from fixtures.prometheus import PrometheusFactory
from phoenix_operator.local.prometheus import (
    LocalPrometheus,
    PrometheusNotInstalled,
    ScrapeTarget,
    render_config,
)

LABELS = {"phoenix_deployment": "chat", "namespace": "default"}


def test_render_config_groups_targets_by_job_and_keeps_labels() -> None:
    config = render_config(
        [
            ScrapeTarget("127.0.0.1:1", {**LABELS, "pod": "triton-0"}, job="triton"),
            ScrapeTarget("127.0.0.1:2", {**LABELS, "pod": "triton-1"}, job="triton"),
            ScrapeTarget("127.0.0.1:3", {**LABELS, "pod": "gateway"}, job="gateway"),
        ],
        scrape_interval_s=0.5,
    )
    assert config["global"]["scrape_interval"] == "500ms"
    assert config["global"]["scrape_timeout"] == "500ms"  # must not exceed the interval
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"triton", "gateway"}
    assert [g["labels"]["pod"] for g in jobs["triton"]["static_configs"]] == ["triton-0", "triton-1"]
    assert jobs["gateway"]["static_configs"][0]["targets"] == ["127.0.0.1:3"]
    json.dumps(config)  # written as JSON, which Prometheus reads as YAML


def test_missing_binary_fails_with_one_clear_line(tmp_path: Path) -> None:
    server = LocalPrometheus(binary=tmp_path / "no-prometheus", workdir=tmp_path / "w")
    with pytest.raises(PrometheusNotInstalled) as info:
        server.start()
    message = str(info.value)
    assert "\n" not in message and "make setup" in message and str(tmp_path / "no-prometheus") in message


@pytest.mark.prometheus
def test_scrapes_targets_with_extra_labels_and_reloads(prometheus_factory: PrometheusFactory) -> None:
    registry = CollectorRegistry()
    Gauge("phoenix_test_value", "A value to scrape", registry=registry).set(42)
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        address = f"127.0.0.1:{server.server_port}"
        prom = prometheus_factory([ScrapeTarget(address, {**LABELS, "pod": "exporter-0"}, job="exporter")])
        began = time.monotonic()
        prom.wait_for_targets_up(timeout_s=30)
        first_up_s = time.monotonic() - began
        prom.wait_for_samples('phoenix_test_value{phoenix_deployment="chat"}', samples=2)
        result = prom.query('phoenix_test_value{phoenix_deployment="chat",namespace="default"}')
        assert len(result) == 1
        assert result[0]["metric"]["pod"] == "exporter-0" and float(result[0]["value"][1]) == 42

        # Reload with a second target (same exporter, other labels): both scraped afterwards.
        prom.reload([*prom.targets, ScrapeTarget(address, {**LABELS, "pod": "exporter-1"}, job="other")])
        prom.wait_for_targets_up(timeout_s=30, count=2)
        pods = {r["metric"]["pod"] for r in prom.query("phoenix_test_value")}
        assert pods == {"exporter-0", "exporter-1"}
        print(f"first target up after {first_up_s:.1f}s")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.prometheus
def test_stop_makes_it_unreachable(prometheus_factory: PrometheusFactory) -> None:
    prom = prometheus_factory([])
    assert prom.query("vector(1)")[0]["value"][1] == "1"
    prom.stop()
    assert not prom.running()
    with pytest.raises(OSError):
        prom.query("vector(1)")
