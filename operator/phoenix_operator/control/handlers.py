"""Kopf wiring of the control loop: one daemon per PhoenixDeployment whose autoscaling is on.

A daemon (not a timer) because the period comes from each object's spec
(`autoscaling.intervalSeconds`) and may change while it runs; Kopf stops the daemon when the
mode goes back to `off` or the object is deleted, and only the active peer runs daemons.
"""

from __future__ import annotations

import threading
from typing import Any

import kopf

from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.control.loop import ControlLoop
from phoenix_operator.reconcile import handlers as reconcile_handlers

RESOURCE = (API_GROUP, API_VERSION, PLURAL)
_loop: dict[str, ControlLoop] = {}
_guard = threading.Lock()


def control_loop() -> ControlLoop:
    with _guard:
        if "loop" not in _loop:
            reconciler = reconcile_handlers.reconciler()
            _loop["loop"] = ControlLoop(reconciler.kube, reconcile_handlers.SETTINGS)
        return _loop["loop"]


def _autoscaling_on(spec: kopf.Spec, **_: Any) -> bool:
    return bool((spec.get("autoscaling") or {}).get("mode", "off") != "off")


@kopf.daemon(*RESOURCE, when=_autoscaling_on, cancellation_timeout=10.0, initial_delay=1.0)
def run_control_loop(stopped: kopf.DaemonStopped, body: kopf.Body, logger: Any, **_: Any) -> None:
    loop = control_loop()
    uid = body["metadata"]["uid"]
    try:
        while not stopped:
            try:
                reconcile_handlers.run_exclusive(body, loop.step)
            except Exception:  # one bad step must not kill the loop; the next interval retries
                logger.exception("control-loop step failed")
            interval = float((body.get("spec", {}).get("autoscaling") or {}).get("intervalSeconds", 30))
            stopped.wait(interval)
    finally:
        loop.forget(uid)
