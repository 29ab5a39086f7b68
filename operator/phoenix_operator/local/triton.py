"""Run the real ``tritonserver`` bundled in the ``nvidia-pytriton`` wheel as a local process.

Its CPU build (2.51) runs the real dynamic batcher, model-control API and metrics endpoint. The
Python backend's stub needs a prepared server tree and this interpreter on ``PATH``: docs/fidelity.md,
"The real side: a local tritonserver and the emulated_llm model".
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from phoenix_operator import settings
from phoenix_operator.local._proc import free_port, log_tail, stop_process, wait_for
from phoenix_operator.render.secrets import TRITON_CONTROL_HEADER, TRITON_RESTRICTED_APIS

#: The APIs ``control_key`` guards: the same ones the operator restricts in a cluster.
RESTRICTED_APIS = TRITON_RESTRICTED_APIS


def restricted_api_args(key: str, header: str = TRITON_CONTROL_HEADER) -> list[str]:
    """Triton flags that make ``RESTRICTED_APIS`` answer only requests carrying ``header: key``.

    Triton refuses others with HTTP 403 (gRPC ``UNAVAILABLE``) naming the header it expects.
    """
    apis = ",".join(RESTRICTED_APIS)
    return [
        f"--http-restricted-api={apis}:{header}={key}",
        f"--grpc-restricted-protocol={apis}:{header}={key}",
    ]


class TritonNotAvailable(RuntimeError):
    """The ``nvidia-pytriton`` wheel (which carries the server binary) is not installed."""


def _site_packages_dir() -> Path:
    """The site-packages folder that holds the ``pytriton`` package (without importing it)."""
    try:
        dist = importlib.metadata.distribution("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError as exc:
        raise TritonNotAvailable(
            "nvidia-pytriton is not installed (it carries the tritonserver binary); run `make setup`"
        ) from exc
    return Path(str(dist.locate_file("")))


def pytriton_version() -> str:
    """Version of the wheel the server binary comes from (names the cache folder)."""
    return importlib.metadata.version("nvidia-pytriton")


def python_tag() -> str:
    """``3.11``-style version of the running interpreter; selects the backend stub."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def prepare_server_tree(cache_root: Path | None = None) -> Path:
    """Return a server tree with the right Python stub installed, copying it once per user.

    The copy is built in a temporary folder and renamed into place, so concurrent test workers
    never see a half-copied tree.
    """
    sp = _site_packages_dir()
    source = sp / "pytriton" / "tritonserver"
    stub = source / "python_backend_stubs" / python_tag() / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonNotAvailable(f"no Python backend stub for Python {python_tag()} in {source}")
    # One prepared tree per wheel version and Python version, in the operator's cache.
    root = cache_root or settings.cache_root()
    target = root / f"triton-pytriton{pytriton_version()}-py{python_tag()}"
    marker = target / ".phoenix-ready"
    if marker.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".triton-", dir=root))
    try:
        tree = scratch / "tritonserver"
        shutil.copytree(source, tree, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub, tree / "backends" / "python" / "triton_python_backend_stub")
        (tree / "caches").mkdir(exist_ok=True)
        (tree / ".phoenix-ready").write_text(f"{source}\n")
        try:
            tree.rename(target)
        except OSError:
            if not marker.is_file():  # lost the race to an unfinished copy: retry once
                shutil.rmtree(target, ignore_errors=True)
                tree.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for ``tritonserver`` so the Python stub uses this interpreter and its packages."""
    env = dict(os.environ if base is None else base)
    sp = _site_packages_dir()
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    libs = [p for p in (libdir, str(sp / "nvidia_pytriton.libs"), env.get("LD_LIBRARY_PATH", "")) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


class LocalTriton:
    """A ``tritonserver`` process on free loopback ports, in EXPLICIT model-control mode.

    Use as a context manager. ``http_url``/``grpc_url`` are ``host:port`` as tritonclient wants
    them; ``metrics_target`` is the ``host:port`` a Prometheus scrape config wants. With
    ``control_key`` the model-control and model-config APIs are restricted to requests that carry
    it in ``TRITON_CONTROL_HEADER``, as the operator runs Triton in a cluster.
    """

    def __init__(
        self,
        model_repository: Path,
        models: Sequence[str] = (),
        *,
        log_path: Path | None = None,
        ready_timeout_s: float = 60.0,
        exit_timeout_s: int = 5,
        log_verbose: int = 0,
        extra_args: Sequence[str] = (),
        cache_root: Path | None = None,
        control_key: str | None = None,
    ) -> None:
        self.model_repository = Path(model_repository)
        self.models = list(models)
        self.ready_timeout_s = ready_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.log_verbose = log_verbose
        self.extra_args = list(extra_args)
        self.cache_root = cache_root
        self.control_key = control_key
        self._own_log_dir: Path | None = None
        if log_path is None:
            self._own_log_dir = Path(tempfile.mkdtemp(prefix="phoenix-triton-log-"))
            log_path = self._own_log_dir / "tritonserver.log"
        self.log_path = Path(log_path)
        self.http_port = self.grpc_port = self.metrics_port = 0
        self.host = "127.0.0.1"
        self._proc: subprocess.Popen[bytes] | None = None
        #: Seconds the last start took until ``/v2/health/ready`` answered 200.
        self.startup_s: float | None = None

    # -- addresses -------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_target(self) -> str:
        return f"{self.host}:{self.metrics_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_target}/metrics"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -------------------------------------------------------------------------
    def command(self, tree: Path) -> list[str]:
        """The ``tritonserver`` command line for the current ports."""
        cmd = [
            str(tree / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={tree / 'backends'}",
            f"--cache-directory={tree / 'caches'}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            # Summaries are what Triton 2.51 exports; histograms are ignored there but on in
            # production images (TTFT histogram for decoupled models), so ask for both.
            "--metrics-config=summary_latencies=true",
            "--metrics-config=histogram_latencies=true",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--log-verbose={self.log_verbose}",
        ]
        cmd += [f"--load-model={name}" for name in self.models]
        if self.control_key:
            cmd += restricted_api_args(self.control_key)
        return cmd + self.extra_args

    def start(self, attempts: int = 3) -> LocalTriton:
        """Start and wait until ready; retries with new ports if one was taken meanwhile."""
        if self.running():
            return self
        tree = prepare_server_tree(self.cache_root)
        env = server_environment()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, attempts + 1):
            self.http_port, self.grpc_port, self.metrics_port = _three_ports()
            began = time.monotonic()
            with self.log_path.open("ab") as log:
                log.write(f"=== phoenix: starting tritonserver (attempt {attempt}) ===\n".encode())
                log.flush()
                self._proc = subprocess.Popen(
                    self.command(tree),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=str(tree),
                    start_new_session=True,
                )
            try:
                wait_for(
                    self._ready,
                    self.ready_timeout_s,
                    what=f"tritonserver ready on {self.http_url} (metrics on {self.metrics_target})",
                    abort=self._exited,
                )
            except (RuntimeError, TimeoutError) as exc:
                tail = log_tail(self.log_path)
                self.stop()
                if attempt < attempts and "address already in use" in tail.lower():
                    continue
                errors = "\n".join(self.log_errors()) or "(none logged)"
                raise RuntimeError(
                    f"{exc}\n--- errors in {self.log_path} ---\n{errors}\n--- log tail ---\n{tail}"
                ) from None
            self.startup_s = time.monotonic() - began
            return self
        raise AssertionError("unreachable")

    def stop(self, term_timeout_s: float = 15.0) -> int | None:
        """SIGTERM (Triton unloads models, up to ``exit_timeout_s``), then SIGKILL the group."""
        if self._proc is None:
            return None
        code = stop_process(self._proc, term_timeout_s=term_timeout_s)
        self._proc = None
        return code

    def kill(self) -> None:
        """Stop without a graceful shutdown (simulates a crashed replica)."""
        self.stop(term_timeout_s=0.0)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def log_errors(self, limit: int = 20) -> list[str]:
        """Error lines of the log (``E1127 ...``): Triton prints why a model failed only there,
        far above the option table that fills the tail."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        errors = [
            line
            for line in lines
            if (_ERROR_LINE.match(line) or line.startswith("error:")) and not any(n in line for n in _NOISE)
        ]
        return errors[-limit:]

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------------------
    def _ready(self) -> bool:
        # The metrics service starts after the HTTP one: wait for both, or a scrape (or a test
        # reading /metrics) right after start-up meets a refused connection.
        return _http_ok(f"http://{self.http_url}/v2/health/ready") and _http_ok(self.metrics_url)

    def _exited(self) -> str | None:
        if self._proc is not None and (code := self._proc.poll()) is not None:
            return f"tritonserver exited with code {code}"
        return None


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


_ERROR_LINE = re.compile(r"^E\d{4} ")
#: Error lines every CPU-only start prints; not the reason anything failed.
_NOISE = ("CudaDriverHelper has not been initialized",)


def _three_ports() -> tuple[int, int, int]:
    ports: list[int] = []
    while len(ports) < 3:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports[0], ports[1], ports[2]
