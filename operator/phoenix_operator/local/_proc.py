"""Process and port helpers shared by the local Triton and Prometheus launchers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from phoenix_operator.cluster.waiting import wait_for as _wait_for

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS just considered free; callers retry on the (rare) race with another binder."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], T | None],
    timeout_s: float,
    *,
    interval_s: float = 0.05,
    what: str = "condition",
    abort: Callable[[], str | None] | None = None,
) -> T:
    """`phoenix_operator.cluster.waiting.wait_for` with the launchers' short poll interval.

    Servers here come up in a second or two, so polls start at ``interval_s`` and stay short.
    """
    result = _wait_for(
        condition,
        timeout=timeout_s,
        interval=interval_s,
        max_interval=max(interval_s, 0.25),
        description=what,
        abort=abort,
    )
    assert result is not None  # wait_for only returns truthy values
    return result


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def stop_process(proc: subprocess.Popen[bytes], *, term_timeout_s: float = 10.0) -> int | None:
    """SIGTERM, wait, then SIGKILL the process *group* (the server and any helpers it forked).

    The launchers start servers in their own session, so the group id is the server's pid and
    only processes this code started are signalled.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=term_timeout_s)
    # Helpers (e.g. Triton's Python-backend stubs) may outlive a killed parent: end the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5.0)
    return proc.returncode
