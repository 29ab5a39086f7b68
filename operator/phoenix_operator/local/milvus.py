"""Run a real Milvus Lite gRPC server (the ``milvus-lite`` console script) as a local process.

The retrieval reconciler is tested against it, and the demo uses it as the "external" Milvus, so
collection management is exercised over the same gRPC API a real Milvus serves. The pitfalls it
works around (bind address, SO_REUSEPORT, SIGINT-only shutdown):
docs/quality.md#the-local-milvus-lite-server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from phoenix_operator.local._proc import free_port, log_tail, stop_process, wait_for


class MilvusLiteNotInstalled(RuntimeError):
    """The ``milvus-lite`` console script is missing (it comes with the milvus-lite wheel)."""


def milvus_lite_binary() -> Path:
    """The ``milvus-lite`` script of *this* interpreter's environment (PHOENIX_MILVUS_LITE_BIN wins).

    Resolved next to ``sys.executable`` rather than on PATH so tests run from an un-activated venv
    still use the pinned milvus-lite, not whatever another environment puts first on PATH.
    """
    override = os.environ.get("PHOENIX_MILVUS_LITE_BIN")
    if override:
        return Path(override)
    beside = Path(sys.executable).parent / "milvus-lite"
    if beside.is_file():
        return beside
    found = shutil.which("milvus-lite")
    return Path(found) if found else beside


def _listening_inodes(port: int) -> set[int]:
    """Socket inodes in LISTEN state on ``port`` (IPv4 and IPv6), from /proc/net."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(int(fields[9]))
    return inodes


def _socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds open."""
    inodes: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


class LocalMilvus:
    """A Milvus Lite server on a free loopback port, persisting into ``data_dir``.

    ``start()`` after ``stop()`` reuses the same data directory (on a new port), which is how
    tests and the demo check that a restart keeps user data.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        ready_timeout_s: float = 60.0,
        binary: Path | None = None,
    ) -> None:
        self.ready_timeout_s = ready_timeout_s
        self.binary = Path(binary) if binary is not None else milvus_lite_binary()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="phoenix-milvus-"))
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "milvus-lite.log"
        self.host = "127.0.0.1"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._port_conflict: str | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, attempts: int = 3) -> LocalMilvus:
        """Start on a free port and wait until a MilvusClient can list collections."""
        if self.running():
            return self
        if not self.binary.is_file():
            raise MilvusLiteNotInstalled(
                f"milvus-lite not found at {self.binary}; install the pinned milvus-lite wheel "
                "into this environment (`make setup`)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, attempts + 1):
            self.port = free_port(self.host)
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [
                        str(self.binary),
                        "server",
                        "--data-dir",
                        str(self.data_dir),
                        "--host",
                        self.host,
                        "--port",
                        str(self.port),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=_default_sigint,
                )
            self._port_conflict = None
            try:
                wait_for(
                    self._port_is_ours,
                    self.ready_timeout_s,
                    what=f"Milvus Lite port {self.uri}",
                    abort=self._abort_reason,
                )
                wait_for(
                    self._lists_collections,
                    self.ready_timeout_s,
                    what=f"Milvus Lite API on {self.uri}",
                    interval_s=0.1,
                    abort=self._abort_reason,
                )
                return self
            except (RuntimeError, TimeoutError) as exc:
                tail = log_tail(self.log_path)
                shared = self._port_conflict is not None
                self.stop()
                if attempt < attempts and (shared or "failed to bind" in tail.lower()):
                    continue
                raise RuntimeError(f"{exc}\n--- {self.log_path} (tail) ---\n{tail}") from None
        raise AssertionError("unreachable")

    def _abort_reason(self) -> str | None:
        if self._port_conflict is not None:
            return self._port_conflict
        if self._proc is None:
            return "not started"
        if self._proc.poll() is not None:
            return f"milvus-lite exited with code {self._proc.returncode}"
        return None

    def _port_is_ours(self) -> bool:
        """True once the port accepts and every listener on it is one of our process's sockets.

        A foreign listener sharing the port through SO_REUSEPORT is recorded in
        ``_port_conflict``, which ends the wait (see ``_abort_reason``) and triggers a retry.
        """
        with socket.create_connection((self.host, self.port), timeout=0.5):
            pass
        listeners = _listening_inodes(self.port)
        if not listeners or self._proc is None:  # no /proc (not Linux): trust the connect
            return True
        ours = _socket_inodes(self._proc.pid)
        if listeners <= ours:
            return True
        if listeners & ours:
            self._port_conflict = f"another server shares port {self.port} (SO_REUSEPORT)"
        return False  # the listener is someone else's and ours is not up yet: keep waiting

    def _lists_collections(self) -> bool:
        from pymilvus import MilvusClient  # heavy import, only needed once the port is open

        client = MilvusClient(self.uri, timeout=5)
        try:
            client.list_collections(timeout=5)
            return True
        finally:
            client.close()

    def stop(self) -> int | None:
        """SIGINT (a clean shutdown), then SIGTERM/SIGKILL after grace periods; data is kept."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=15.0)
        code = stop_process(self._proc, term_timeout_s=10.0)
        self._proc = None
        return code

    def cleanup(self) -> None:
        """Stop and remove the work folder if this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalMilvus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def _default_sigint() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Undo an inherited SIG_IGN so the server installs its SIGINT (clean shutdown) handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
