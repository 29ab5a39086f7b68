"""Poll-until-true helper: the one way the cluster code and its tests wait for anything.

Why: a bare ``sleep`` either wastes time or is too short on a loaded 2-core CI machine; polling
a condition with a deadline is both fast and robust, and its timeout message says what never
happened (with the last value or error seen), which is what one needs to debug a flaky wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The condition did not hold before the deadline."""


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.2,
    description: str = "condition",
    max_interval: float = 1.0,
    ignore: tuple[type[BaseException], ...] = (Exception,),
    abort: Callable[[], str | None] | None = None,
) -> T:
    """Call *condition* until it returns a truthy value, and return that value.

    Exceptions of the *ignore* types count as "not yet" (the API may not be up). The interval
    grows gently up to *max_interval* so long waits do not hammer the API server. *abort* is
    checked between polls: a message ends the wait at once (the process being waited for died),
    so a crash fails fast instead of after the whole timeout.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    delay = interval
    while True:
        try:
            value = condition()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if abort is not None and (reason := abort()) is not None:
            raise RuntimeError(f"gave up waiting for {description}: {reason}")
        now = time.monotonic()
        if now >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {description} (last: {last!r})")
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 1.5, max_interval)
