"""Run a real Prometheus server (Debian's ``prometheus`` package) as a local process.

So the metric source's PromQL is evaluated by Prometheus itself, with the labels a Kubernetes
scrape would add. See docs/demo.md ("The local Prometheus"), including the ~5 s scrape pitfall.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from phoenix_operator.local._proc import free_port, log_tail, stop_process, wait_for


def prometheus_binary() -> Path:
    """The server binary: ``PHOENIX_PROMETHEUS_BIN``, read when a server is made, else Debian's."""
    return Path(os.environ.get("PHOENIX_PROMETHEUS_BIN", "/usr/bin/prometheus"))


class PrometheusNotInstalled(RuntimeError):
    """The Prometheus binary is missing (``make setup`` installs the Debian package)."""


@dataclass(frozen=True)
class ScrapeTarget:
    """One static scrape target: ``address`` is ``host:port``; ``labels`` are added to every series."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    job: str = "phoenix"
    metrics_path: str = "/metrics"


def _duration(seconds: float) -> str:
    """Prometheus duration text (milliseconds, so sub-second intervals work)."""
    return f"{max(1, round(seconds * 1000))}ms"


def render_config(targets: Sequence[ScrapeTarget], scrape_interval_s: float = 1.0) -> dict[str, Any]:
    """Prometheus configuration (as a dict; JSON is valid YAML) with one job per job name."""
    interval = _duration(scrape_interval_s)
    jobs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for target in targets:
        groups = jobs.setdefault((target.job, target.metrics_path), [])
        groups.append({"targets": [target.address], "labels": dict(target.labels)})
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": [
            {"job_name": job, "metrics_path": path, "static_configs": groups}
            for (job, path), groups in jobs.items()
        ],
    }


class LocalPrometheus:
    """A Prometheus server on a free loopback port with a fresh TSDB, scraping static targets."""

    def __init__(
        self,
        targets: Sequence[ScrapeTarget] = (),
        *,
        scrape_interval_s: float = 1.0,
        workdir: Path | None = None,
        ready_timeout_s: float = 30.0,
        binary: Path | None = None,
    ) -> None:
        self.targets = list(targets)
        self.scrape_interval_s = scrape_interval_s
        self.ready_timeout_s = ready_timeout_s
        self.binary = Path(binary) if binary is not None else prometheus_binary()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="phoenix-prom-"))
        self.config_path = self.workdir / "prometheus.yml"
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "prometheus.log"
        self.host = "127.0.0.1"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(render_config(self.targets, self.scrape_interval_s), indent=2))

    def start(self, attempts: int = 3) -> LocalPrometheus:
        """Start on a free port with a fresh TSDB and wait for ``/-/ready``."""
        if self.running():
            return self
        if not self.binary.is_file():
            raise PrometheusNotInstalled(
                f"Prometheus binary not found at {self.binary}; `make setup` installs it "
                "(apt-get install -y --no-install-recommends prometheus)"
            )
        self.write_config()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [
                        str(self.binary),
                        f"--config.file={self.config_path}",
                        f"--storage.tsdb.path={self.data_dir}",
                        f"--web.listen-address={self.host}:{self.port}",
                        "--web.enable-lifecycle",
                        "--log.level=info",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            try:
                wait_for(
                    self._ready,
                    self.ready_timeout_s,
                    what=f"Prometheus ready on {self.url}",
                    abort=self._exited,
                )
                return self
            except (RuntimeError, TimeoutError) as exc:
                tail = log_tail(self.log_path)
                self.stop()
                if attempt < attempts and "address already in use" in tail.lower():
                    continue
                raise RuntimeError(f"{exc}\n--- {self.log_path} (tail) ---\n{tail}") from None
        raise AssertionError("unreachable")

    def reload(self, targets: Sequence[ScrapeTarget] | None = None) -> None:
        """Rewrite the config (optionally with new targets) and POST ``/-/reload``."""
        if targets is not None:
            self.targets = list(targets)
        self.write_config()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            if resp.status != 200:
                raise RuntimeError(f"Prometheus reload failed: HTTP {resp.status}")

    def stop(self) -> int | None:
        """SIGTERM (Prometheus flushes its head block), then SIGKILL after a grace period."""
        if self._proc is None:
            return None
        code = stop_process(self._proc, term_timeout_s=10.0)
        self._proc = None
        return code

    def kill(self) -> None:
        """Stop abruptly (an unreachable Prometheus, as the metric source sees it)."""
        if self._proc is not None:
            stop_process(self._proc, term_timeout_s=0.0)
            self._proc = None

    def cleanup(self) -> None:
        """Stop and remove the work folder if this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- queries (plain HTTP, so this module does not depend on the API client) ------------
    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; returns the ``result`` list of a vector (raises on an API error)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        result = body["data"]["result"]
        return list(result) if isinstance(result, list) else [{"value": result}]

    def active_targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets?state=active", timeout=10) as resp:
            body = json.loads(resp.read())
        return list(body["data"]["activeTargets"])

    def wait_for_targets_up(self, timeout_s: float = 30.0, count: int | None = None) -> list[dict[str, Any]]:
        """Wait until ``count`` (default: all configured) targets have been scraped successfully."""
        want = len(self.targets) if count is None else count

        def up() -> list[dict[str, Any]] | None:
            active = [t for t in self.active_targets() if t.get("health") == "up"]
            return active if len(active) >= want else None

        return wait_for(
            up, timeout_s, interval_s=0.1, what=f"{want} Prometheus target(s) up", abort=self._exited
        )

    def wait_for_samples(self, selector: str, samples: int = 2, timeout_s: float = 30.0) -> None:
        """Wait until every series matching ``selector`` has ``samples`` points (rate() needs 2).

        The window spans ``samples + 1`` scrape intervals, so older scrapes are not counted.
        """
        window = _duration(self.scrape_interval_s * (samples + 1))

        def enough() -> bool:
            result = self.query(f"min(count_over_time({selector}[{window}]))")
            return bool(result) and float(result[0]["value"][1]) >= samples

        wait_for(
            enough, timeout_s, interval_s=0.1, what=f"{samples} samples of {selector}", abort=self._exited
        )

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _exited(self) -> str | None:
        if self._proc is not None and (code := self._proc.poll()) is not None:
            return f"prometheus exited with code {code}: {log_tail(self.log_path, 5)}"
        return None
