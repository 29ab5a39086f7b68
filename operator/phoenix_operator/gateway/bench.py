"""``phoenix bench gateway``: the gateway's own cost, with everything behind it real and fast.

Triton serves ``emulated_chat`` with near-zero times and the gateway is pinned to one core, so what
is measured is the gateway. Stack, phases and figures: docs/gateway.md, "Overhead and throughput".
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from phoenix_operator.stats import percentile


def _server_timing(header: str) -> dict[str, float]:
    """``embed;dur=5.1, search;dur=2`` → {"embed": 5.1, "search": 2.0} (milliseconds)."""
    out: dict[str, float] = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            out[name] = float(rest[4:])
    return out


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "mean": None}
    arr = np.asarray(values)
    return {
        "p50": round(percentile(arr, 50), 3),
        "p99": round(percentile(arr, 99), 3),
        "mean": round(float(arr.mean()), 3),
    }


async def _one(
    client: Any, url: str, model: str, text: str, out: list[dict[str, float]], errors: list[str]
) -> None:
    began = time.perf_counter()
    try:
        response = await client.post(
            url,
            json={"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 1},
        )
    except Exception as exc:  # a transport failure is a result here, not a crash
        errors.append(type(exc).__name__)
        return
    if response.status_code != 200:
        errors.append(str(response.status_code))
        return
    timing = _server_timing(response.headers.get("server-timing", ""))
    timing["client"] = (time.perf_counter() - began) * 1000
    out.append(timing)


async def _open_loop(url: str, model: str, texts: list[str], rate: float, duration: float) -> dict[str, Any]:
    import httpx

    results: list[dict[str, float]] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        tasks = []
        began = time.perf_counter()
        total = int(rate * duration)
        for i in range(total):
            delay = began + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(
                asyncio.create_task(_one(client, url, model, texts[i % len(texts)], results, errors))
            )
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - began
    return {"results": results, "errors": errors, "elapsed_s": elapsed, "offered": total}


async def _closed_loop(
    url: str, model: str, texts: list[str], concurrency: int, duration: float
) -> dict[str, Any]:
    import httpx

    results: list[dict[str, float]] = []
    errors: list[str] = []
    stop_at = time.perf_counter() + duration
    counter = iter(range(10**9))

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop_at:
            await _one(client, url, model, texts[next(counter) % len(texts)], results, errors)

    async with httpx.AsyncClient(timeout=30) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {"results": results, "errors": errors, "elapsed_s": elapsed}


def run_benchmark(
    *, per_intent: int, rate: float, duration: float, concurrency: int, gateway_core: int, workdir: Path
) -> dict[str, Any]:
    """Start the stack, run both phases, stop everything; returns the figures."""
    from phoenix_operator.gateway.local import GatewayProcess, banking77_rows, ingest_passages, local_spec
    from phoenix_operator.local.milvus import LocalMilvus
    from phoenix_operator.local.models import (
        emulated_chat_config,
        emulated_chat_model_source,
        emulated_chat_spec,
        write_model_repository,
    )
    from phoenix_operator.local.triton import LocalTriton
    from phoenix_operator.ml.embedder import Embedder

    cores = sorted(os.sched_getaffinity(0))
    if gateway_core not in cores:
        raise click.ClickException(f"core {gateway_core} is not available (this process may use {cores})")
    spec = emulated_chat_spec(
        local_spec(max_batch_size=8, request_timeout_s=30),
        prefill_ms=0.5,
        per_token_ms=0.0,
        default_max_tokens=1,
    )
    assert spec.retrieval is not None
    repo = workdir / "models"
    write_model_repository(
        repo, spec.model.name, emulated_chat_config(spec), model_source=emulated_chat_model_source()
    )
    texts = [t for t, _ in banking77_rows("train", per_intent or None)]
    queries = [t for t, _ in banking77_rows("test")]
    figures: dict[str, Any] = {}
    with (
        LocalMilvus(workdir / "milvus") as milvus,
        LocalTriton(repo, [spec.model.name], log_path=workdir / "triton.log") as triton,
    ):
        began = time.perf_counter()
        ingest_passages(milvus.uri, spec.retrieval.collection, texts, Embedder.load(threads=len(cores)))
        figures["ingest_s"] = round(time.perf_counter() - began, 1)
        with GatewayProcess(
            spec, triton.grpc_url, milvus_uri=milvus.uri, workdir=workdir / "gateway", cpus={gateway_core}
        ) as gw:
            others = set(cores) - {gateway_core}
            if others:
                os.sched_setaffinity(0, others)  # the load generator stays off the gateway's core
            url, model = f"{gw.url}/v1/chat/completions", spec.model.name
            asyncio.run(_closed_loop(url, model, queries, 2, 3.0))  # warm-up: sessions, caches, pools
            cpu0 = gw.cpu_seconds()
            opened = asyncio.run(_open_loop(url, model, queries, rate, duration))
            cpu_open = gw.cpu_seconds() - cpu0
            cpu1 = gw.cpu_seconds()
            closed = asyncio.run(_closed_loop(url, model, queries, concurrency, duration))
            cpu_closed = gw.cpu_seconds() - cpu1
            os.sched_setaffinity(0, set(cores))
    ok = opened["results"]
    overhead = [r.get("embed", 0) + r.get("classify", 0) + r.get("search", 0) for r in ok]
    done = len(closed["results"])
    figures.update(
        {
            "collection_rows": len(texts),
            "gateway_cores": 1,
            "offered_rate_rps": rate,
            "achieved_rate_rps": round(len(ok) / opened["elapsed_s"], 2),
            "open_loop_requests": opened["offered"],
            "open_loop_errors": len(opened["errors"]),
            "overhead_p50_ms": _percentiles(overhead)["p50"],
            "overhead_p99_ms": _percentiles(overhead)["p99"],
            "stages_ms": {
                s: _percentiles([r[s] for r in ok if s in r]) for s in ("embed", "classify", "search")
            },
            "handoff_ms": _percentiles([r["handoff"] for r in ok if "handoff" in r]),
            "client_latency_ms": _percentiles([r["client"] for r in ok]),
            "open_loop_gateway_cpu_s": round(cpu_open, 2),
            "open_loop_gateway_cpu_utilisation": round(cpu_open / opened["elapsed_s"], 3),
            "concurrency": concurrency,
            "closed_loop_rps": round(done / closed["elapsed_s"], 2),
            "closed_loop_errors": len(closed["errors"]),
            "closed_loop_gateway_cpu_s": round(cpu_closed, 2),
            "rps_per_core": round(done / cpu_closed, 2) if cpu_closed > 0 else None,
            "closed_loop_client_latency_ms": _percentiles([r["client"] for r in closed["results"]]),
        }
    )
    return figures


@click.command("gateway")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the figures here."
)
@click.option("--rate", default=50.0, show_default=True, help="Open-loop request rate (requests/s).")
@click.option("--duration", default=20.0, show_default=True, help="Seconds per phase.")
@click.option("--concurrency", default=8, show_default=True, help="Clients in the closed-loop phase.")
@click.option(
    "--per-intent",
    default=0,
    show_default=True,
    help="Knowledge-base texts per BANKING77 intent (0 = the whole training split, 10,003 texts).",
)
@click.option(
    "--core", "gateway_core", default=0, show_default=True, help="CPU core the gateway is pinned to."
)
def bench_gateway(
    json_path: Path | None, rate: float, duration: float, concurrency: int, per_intent: int, gateway_core: int
) -> None:
    """Benchmark the gateway's own overhead (classify + embed + search) and its requests/s per core."""
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-gateway-") as tmp:
        figures = run_benchmark(
            per_intent=per_intent,
            rate=rate,
            duration=duration,
            concurrency=concurrency,
            gateway_core=gateway_core,
            workdir=Path(tmp),
        )
    text = json.dumps(figures, indent=2)
    click.echo(text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n")
