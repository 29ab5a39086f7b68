"""Kopf wiring of the control loop: one asyncio daemon per PhoenixDeployment whose autoscaling is on.

Async so that a waiting loop holds none of Kopf's executor threads (the reconciler needs them); a
daemon, not a timer, because each object's interval comes from its spec and may change. Details:
docs/operator.md, "The control loop" (Concurrency).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import kopf
from prometheus_client import Histogram

from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.control.loop import ControlLoop, rendered
from phoenix_operator.control.schedule import missed_slots, next_start
from phoenix_operator.render.objects import triton_name
from phoenix_operator.runtime import metrics as opmetrics
from phoenix_operator.runtime.reconcile import PROCESS, process_of, refresh_owner, run_on_watched

RESOURCE = (API_GROUP, API_VERSION, PLURAL)
DEFAULT_INTERVAL_S = 30.0
log = logging.getLogger("phoenix_operator.control")
T = TypeVar("T")
#: The operator memo's key for the control loop's process objects.
CONTROL = "control"

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


@dataclass
class ControlProcess:
    """The control loop's process objects: built at start-up, kept in Kopf's operator memo."""

    loop: ControlLoop
    #: Runs steps, sized by ``control_workers``: a step holds a thread only while it runs.
    pool: ThreadPoolExecutor


def control_of(memo: kopf.Memo) -> ControlProcess:
    control: ControlProcess = memo[CONTROL]
    return control


async def in_executor(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn(*args)`` on the control pool, with this task's context variables.

    The context matters: Kopf's per-object logging context lives in context variables, which a
    plain ``run_in_executor`` does not carry into the thread.
    """
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(pool, call)


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


async def start_control(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Start-up, after the reconciler's: the loop shares its Kubernetes client and settings."""
    if PROCESS not in memo:
        raise kopf.TemporaryError("the reconciler's start-up has not finished", delay=0.5)
    process = process_of(memo)
    workers = process.settings.control_workers
    memo[CONTROL] = ControlProcess(
        loop=ControlLoop(
            process.reconciler.kube,
            process.settings,
            on_step=opmetrics.observe_step,
            writer=process.reconciler.writer,
        ),
        pool=ThreadPoolExecutor(max_workers=workers, thread_name_prefix="phoenix-control"),
    )
    logger.info(
        f"control loop: one asyncio daemon per autoscaled deployment, steps on {workers} thread(s) "
        f"(PHOENIX_CONTROL_WORKERS)"
    )


async def stop_control(memo: kopf.Memo, **_: Any) -> None:
    control = memo.pop(CONTROL, None)
    if control is not None:
        control.pool.shutdown(wait=False, cancel_futures=True)


async def run_control_loop(
    stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    process, control = process_of(memo), control_of(memo)
    uid = body["metadata"]["uid"]

    async def step() -> None:
        if not rendered(body):
            return  # nothing to observe yet, and no control worker taken from the first passes
        began = time.monotonic()
        meta = body["metadata"]
        # As the child watch last saw it; None (not seen yet): the step reads it.
        deployment = process.deployments.get((meta["namespace"], triton_name(meta["name"])))
        work = functools.partial(control.loop.step, deployment=deployment)
        try:
            result = await in_executor(control.pool, run_on_watched, process, body, work)
            if result is not None and result.reconcile:
                await in_executor(control.pool, refresh_owner, process, meta["namespace"], meta["name"])
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
        control.loop.forget(uid)


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the control loop's start-up, clean-up and daemon to ``registry`` (after the reconciler's)."""
    kopf.on.startup(registry=registry)(start_control)
    kopf.on.cleanup(registry=registry)(stop_control)
    kopf.daemon(
        *RESOURCE, when=_autoscaling_on, cancellation_timeout=10.0, initial_delay=1.0, registry=registry
    )(run_control_loop)
