"""Kopf wiring of the control loop: one asyncio daemon per PhoenixDeployment whose autoscaling is on.

Async, because a synchronous Kopf daemon holds one of Kopf's executor threads for its whole
life: with more deployments in `recommend`/`auto` than threads, the surplus loops never ran and
the reconciler's own handlers (which need the same threads) stalled. Here each loop awaits its
interval on the event loop and hands only the step itself — Prometheus queries, Triton model
control, Kubernetes reads and patches, all blocking — to a bounded thread pool
(`PHOENIX_CONTROL_WORKERS`), for the duration of the step.

A daemon (not a timer) because the period comes from each object's spec
(`autoscaling.intervalSeconds`) and may change while it runs; Kopf stops the daemon when the
mode goes back to `off` or the object is deleted, and only the active peer runs daemons.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import kopf
from prometheus_client import Histogram

from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.control.loop import ControlLoop
from phoenix_operator.control.schedule import missed_slots, next_start
from phoenix_operator.reconcile import handlers as reconcile_handlers

RESOURCE = (API_GROUP, API_VERSION, PLURAL)
DEFAULT_INTERVAL_S = 30.0
log = logging.getLogger("phoenix_operator.control")
T = TypeVar("T")

#: How far each step's start strayed from its interval: what "steps run on time" is measured by
#: (``phoenix bench operator`` reads it). A skipped slot shows as 1.0 (twice the interval).
STEP_INTERVAL_DRIFT = Histogram(
    "phoenix_control_step_interval_drift_ratio",
    "|actual - configured| / configured interval between consecutive control-loop step starts",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)
STEP_SECONDS = Histogram(
    "phoenix_control_step_seconds",
    "Control-loop step duration, waiting for a control worker included",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

_loop: dict[str, ControlLoop] = {}
_pool: dict[str, ThreadPoolExecutor] = {}
_guard = threading.Lock()


def control_loop() -> ControlLoop:
    with _guard:
        if "loop" not in _loop:
            reconciler = reconcile_handlers.reconciler()
            _loop["loop"] = ControlLoop(reconciler.kube, reconcile_handlers.SETTINGS)
        return _loop["loop"]


def control_executor() -> ThreadPoolExecutor:
    """The pool that runs steps, sized by ``control_workers`` (made at start-up, else on first use)."""
    with _guard:
        if "pool" not in _pool:
            _pool["pool"] = ThreadPoolExecutor(
                max_workers=reconcile_handlers.SETTINGS.control_workers, thread_name_prefix="phoenix-control"
            )
        return _pool["pool"]


async def in_executor(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn(*args)`` on the control pool, with this task's context variables.

    The context matters: ``kopf.event`` finds Kopf's posting queue through context variables,
    which a plain ``run_in_executor`` does not carry into the thread.
    """
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(control_executor(), call)


async def run_periodically(
    step: Callable[[], Awaitable[None]],
    interval_s: Callable[[], float],
    wait: Callable[[float], Awaitable[bool]],
    clock: Callable[[], float] = time.monotonic,
    on_drift: Callable[[float], None] | None = None,
) -> None:
    """Await ``step`` on a fixed grid of planned starts until ``wait`` reports a stop.

    ``interval_s`` is read after every step (a spec edit applies from the next slot);
    ``wait(seconds)`` sleeps without holding a thread and returns True once stopped;
    ``on_drift`` gets |actual − configured| / configured for each interval between two starts.
    """
    planned = clock()
    previous_start: float | None = None
    configured = interval_s()
    while True:
        started = clock()
        if previous_start is not None and on_drift is not None:
            on_drift(abs((started - previous_start) - configured) / configured)
        previous_start = started
        await step()
        configured = interval_s()
        following = next_start(planned, configured, clock())
        skipped = missed_slots(planned, configured, following)
        if skipped:
            log.warning("control-loop step overran its interval: skipped %d slot(s)", skipped)
        planned = following
        if await wait(max(0.0, planned - clock())):
            return


def _interval_of(body: kopf.Body) -> float:
    seconds = (body.get("spec", {}).get("autoscaling") or {}).get("intervalSeconds", DEFAULT_INTERVAL_S)
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


def _autoscaling_on(spec: kopf.Spec, **_: Any) -> bool:
    return bool((spec.get("autoscaling") or {}).get("mode", "off") != "off")


@kopf.on.startup()
async def start_control_pool(logger: kopf.Logger, **_: Any) -> None:
    workers = reconcile_handlers.SETTINGS.control_workers
    control_executor()
    logger.info(
        f"control loop: one asyncio daemon per autoscaled deployment, steps on {workers} thread(s) "
        f"(PHOENIX_CONTROL_WORKERS)"
    )


@kopf.on.cleanup()
async def stop_control_pool(**_: Any) -> None:
    with _guard:
        pool = _pool.pop("pool", None)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


@kopf.daemon(*RESOURCE, when=_autoscaling_on, cancellation_timeout=10.0, initial_delay=1.0)
async def run_control_loop(stopped: kopf.DaemonStopped, body: kopf.Body, logger: Any, **_: Any) -> None:
    control = await in_executor(control_loop)
    uid = body["metadata"]["uid"]

    async def step() -> None:
        began = time.monotonic()
        try:
            await in_executor(reconcile_handlers.run_exclusive, body, control.step)
        except Exception:  # one bad step must not kill the loop; the next interval retries
            logger.exception("control-loop step failed")
        finally:
            STEP_SECONDS.observe(time.monotonic() - began)

    async def wait(seconds: float) -> bool:
        if not stopped:
            await stopped.wait(seconds)
        return bool(stopped)

    try:
        await run_periodically(step, lambda: _interval_of(body), wait, on_drift=STEP_INTERVAL_DRIFT.observe)
    finally:
        control.forget(uid)
