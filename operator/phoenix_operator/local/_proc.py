"""Process and port helpers shared by the local Triton and Prometheus launchers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

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
    """Poll ``condition`` until it returns a truthy value (returned) or ``timeout_s`` passes.

    ``abort`` is checked between polls; a non-None message ends the wait early (e.g. the server
    process died), so a crash fails fast instead of after the full timeout.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
        except Exception as exc:  # a poll may fail while the server is still coming up
            last_error = exc
            value = None
        if value:
            return value
        if abort is not None and (reason := abort()) is not None:
            raise RuntimeError(f"gave up waiting for {what}: {reason}")
        if time.monotonic() >= deadline:
            suffix = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout_s:.1f}s waiting for {what}{suffix}")
        time.sleep(interval_s)


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
