"""A real Kubernetes control plane on loopback: etcd, API server, controller-manager, scheduler, kwok.

The operator must be tested against the genuine API server, but there is no Docker or kubelet
here: the real binaries run as plain processes and kwok plays the GPU nodes' kubelets.
See docs/demo.md ("The local cluster") for process tracking and ``up``/``down``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from phoenix_operator.cluster import build
from phoenix_operator.cluster.manifests import NodeSpec, render_kubeconfig, render_kwok_config, render_nodes
from phoenix_operator.cluster.pki import FRONT_PROXY_CLIENT, Pki, create_pki
from phoenix_operator.cluster.ports import pick_ports, port_is_listening
from phoenix_operator.cluster.waiting import WaitTimeout, wait_for

__all__ = ["ClusterError", "ComponentStatus", "LocalCluster", "UpResult", "default_state_dir"]

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
POD_CIDR = "10.244.0.0/16"
CLUSTER_NAME = "phoenix-local"
_STATE_FILE = "cluster.json"
_MARKER = ".phoenix-cluster"  # only folders carrying it are ever deleted by `down`

#: Start order; `down` stops in reverse.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
"""
DEFAULT_STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {
        "name": "standard",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    },
    "provisioner": "kubernetes.io/host-path",
    "reclaimPolicy": "Delete",
    "volumeBindingMode": "Immediate",
}
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class ClusterError(RuntimeError):
    """The cluster could not be started or stopped; the message is one line for the user."""


def default_state_dir() -> Path:
    """``$PHOENIX_CLUSTER_DIR``, else ``$XDG_CACHE_HOME/phoenix-operator/cluster``."""
    env = os.environ.get("PHOENIX_CLUSTER_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "phoenix-operator" / "cluster"


@dataclass
class ProcessRecord:
    """What ``down`` needs to find a started process again, and to be sure it is the same one."""

    name: str
    pid: int
    start_ticks: int
    log: str
    ports: dict[str, int] = field(default_factory=dict)
    #: How it was started (command line and extra environment), so one component can be
    #: restarted exactly as it was: same ports, same data directory.
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int
    alive: bool
    ports: dict[str, int]
    log: str


@dataclass(frozen=True)
class UpResult:
    already_running: bool
    seconds: float
    kubeconfig: Path
    server: str


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of *pid* from /proc, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _reap(pid: int) -> None:
    """Collect *pid*'s exit status if it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def process_alive(pid: int, start_ticks: int | None = None) -> bool:
    """True when *pid* runs (not a zombie) and, if given, started at *start_ticks* (no PID reuse)."""
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, ticks = stat
    if state in ("Z", "X"):
        _reap(pid)
        return False
    return start_ticks is None or ticks == start_ticks


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the child when its parent dies (used by test fixtures, not the CLI)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process_groups(records: list[ProcessRecord], *, grace: float = 10.0) -> None:
    """SIGTERM each recorded process group, wait up to *grace* seconds, then SIGKILL the rest."""
    live = [r for r in records if process_alive(r.pid, r.start_ticks)]
    for rec in reversed(live):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(rec.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(process_alive(r.pid, r.start_ticks) for r in live):
        time.sleep(0.05)
    for rec in live:
        if process_alive(rec.pid, rec.start_ticks):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(rec.pid, signal.SIGKILL)
    for rec in live:
        with contextlib.suppress(WaitTimeout):
            wait_for(
                functools.partial(_exited, rec), timeout=5, interval=0.02, description=f"{rec.name} to exit"
            )


def _exited(rec: ProcessRecord) -> bool:
    """True once *rec* is gone for good: reaped if it is our child (a multi-threaded Go process
    shows as a zombie while its threads still exit, and only then can it be reaped)."""
    try:
        pid, _status = os.waitpid(rec.pid, os.WNOHANG)
    except ChildProcessError:
        # Not (or no longer) our child: init or a subreaper collects it.
        return not process_alive(rec.pid, rec.start_ticks)
    return pid != 0


def tail(path: Path, lines: int = 40) -> str:
    """The last *lines* lines of a log file ('' when missing); for error messages and test reports."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


# --------------------------------------------------------------------------- API access


class _Api:
    """Minimal HTTPS JSON client for the API server (the kubernetes package is slow to import)."""

    def __init__(self, server: str, pki: Pki, client: str = "admin") -> None:
        self.server = server
        self._ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        self._ctx.load_cert_chain(str(pki.client_cert(client)), str(pki.client_key(client)))

    def request(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self._ctx, timeout=timeout) as resp:
                raw = resp.read()
                code = resp.status
        except urllib.error.HTTPError as err:
            raw, code = err.read(), err.code
        try:
            return code, json.loads(raw) if raw else None
        except ValueError:
            return code, raw.decode("utf-8", "replace")


def _http_ok(url: str, *, verify: ssl.SSLContext | None = None, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, context=verify, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, ValueError):
        return False


def _insecure_ctx() -> ssl.SSLContext:
    # The controller-manager and scheduler serve /healthz with a self-signed certificate.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# --------------------------------------------------------------------------- the cluster


class LocalCluster:
    """One local control plane living in *state_dir*; ``up``/``down`` are idempotent.

    The same class serves ``phoenix cluster``, the pytest fixture and the demo, so they all
    meet the same cluster. ``die_with_parent`` ties the processes to this Python process
    (for test fixtures: a killed pytest leaves nothing behind).
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        nodes: NodeSpec | None = None,
        *,
        die_with_parent: bool = False,
        quiet: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.state_dir = (state_dir or default_state_dir()).expanduser().absolute()
        self.nodes = nodes or NodeSpec()
        self.die_with_parent = die_with_parent
        self.quiet = quiet
        self._log = log or (lambda _msg: None)
        self._children: list[subprocess.Popen[bytes]] = []

    # ----------------------------------------------------------------- paths & state

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (certificates embedded): what ``KUBECONFIG`` should point at."""
        return self.state_dir / "admin.kubeconfig"

    @property
    def pki(self) -> Pki:
        return Pki(self.state_dir / "pki")

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def log_path(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    def _read_state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads((self.state_dir / _STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_dir / (_STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.state_dir / _STATE_FILE)

    def _records(self, state: dict[str, Any] | None = None) -> list[ProcessRecord]:
        state = state if state is not None else self._read_state()
        return [ProcessRecord(**p) for p in (state or {}).get("processes", [])]

    @property
    def server(self) -> str | None:
        """The API server URL, or None when no cluster state exists."""
        state = self._read_state()
        return None if state is None else str(state["server"])

    @property
    def ports(self) -> dict[str, int]:
        state = self._read_state()
        return {} if state is None else {k: int(v) for k, v in state["ports"].items()}

    # ----------------------------------------------------------------- queries

    def status(self) -> list[ComponentStatus]:
        return [
            ComponentStatus(r.name, r.pid, process_alive(r.pid, r.start_ticks), r.ports, r.log)
            for r in self._records()
        ]

    def is_running(self) -> bool:
        """All five processes alive and the API server answering /readyz."""
        state = self._read_state()
        if state is None:
            return False
        records = self._records(state)
        if {r.name for r in records} != set(COMPONENTS):
            return False
        if not all(process_alive(r.pid, r.start_ticks) for r in records):
            return False
        return self._apiserver_ready(str(state["server"]))

    def _apiserver_ready(self, server: str) -> bool:
        try:
            code, _body = _Api(server, self.pki).request("GET", "/readyz", timeout=2)
        except (OSError, ssl.SSLError, ValueError):
            return False
        return code == 200

    def api(self) -> _Api:
        server = self.server
        if server is None:
            raise ClusterError(f"no cluster in {self.state_dir}; run `phoenix cluster up`")
        return _Api(server, self.pki)

    def env_lines(self) -> list[str]:
        """Shell lines that point kubectl/helm at this cluster and put the built tools on PATH."""
        bins = [str(build.tool_bin_dir(t)) for t in ("kubernetes", "helm", "etcd", "kwok")]
        return [
            f"export KUBECONFIG={_shell_quote(str(self.kubeconfig))}",
            f"export PATH={_shell_quote(':'.join(bins))}:$PATH",
        ]

    # ----------------------------------------------------------------- up

    def up(self, *, timeout: float = 120.0) -> UpResult:
        """Start the cluster (building missing binaries first) and wait until it is usable.

        Usable means: API server ready, controllers and scheduler healthy, every fake node
        Ready without the not-ready taint, and the ``default`` ServiceAccount present, so a
        Deployment created right after ``up`` returns gets scheduled and admitted.
        """
        binaries = build.ensure_tools(quiet=self.quiet)
        with build.file_lock(self._lock_path):
            if self.is_running():
                return UpResult(True, 0.0, self.kubeconfig, str(self.server))
            if self._read_state() is not None or (self.state_dir / _MARKER).exists():
                self._log(f"removing stale cluster state in {self.state_dir}")
                self._down()
            started = time.monotonic()
            try:
                self._start(binaries, timeout=timeout)
            except BaseException:
                # Keep the logs for the post-mortem; stop whatever did start.
                stop_process_groups(self._records())
                raise
            return UpResult(False, time.monotonic() - started, self.kubeconfig, str(self.server))

    @property
    def _lock_path(self) -> Path:
        # Beside the state folder, not in it: `down` deletes the folder.
        return self.state_dir.parent / f".{self.state_dir.name}.lock"

    def _prepare_state_dir(self) -> None:
        if (
            self.state_dir.exists()
            and any(self.state_dir.iterdir())
            and not (self.state_dir / _MARKER).exists()
        ):
            raise ClusterError(
                f"{self.state_dir} exists and is not a phoenix cluster folder; choose another --state-dir"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / _MARKER).write_text(
            "phoenix-operator local cluster state; `phoenix cluster down` deletes this folder\n"
        )
        self.log_dir.mkdir(exist_ok=True)

    def _start(self, binaries: dict[str, Path], *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._prepare_state_dir()
        pki = create_pki(self.state_dir / "pki", extra_sans=(f"IP:{SERVICE_IP}",))
        names = ("etcd_client", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok")
        ports = dict(zip(names, pick_ports(len(names)), strict=True))
        server = f"https://127.0.0.1:{ports['apiserver']}"
        state: dict[str, Any] = {
            "version": 1,
            "server": server,
            "ports": ports,
            "nodes": asdict(self.nodes),
            "kubernetes": build.KUBERNETES_VERSION,
            "processes": [],
        }
        self._write_state(state)

        kubeconfigs = {}
        for client in ("admin", "controller-manager", "scheduler", "kwok"):
            path = self.state_dir / f"{client}.kubeconfig"
            path.write_text(
                render_kubeconfig(
                    server=server,
                    ca_pem=pki.ca_cert.read_bytes(),
                    cert_pem=pki.client_cert(client).read_bytes(),
                    key_pem=pki.client_key(client).read_bytes(),
                    user=f"phoenix-{client}",
                    cluster_name=CLUSTER_NAME,
                )
            )
            path.chmod(0o600)
            kubeconfigs[client] = path
        kwok_config = self.state_dir / "kwok.yaml"
        kwok_config.write_text(render_kwok_config(pod_cidr=POD_CIDR))

        def spawn(name: str, argv: list[str], env: dict[str, str] | None = None, **ports_: int) -> None:
            rec = self._spawn(name, argv, env)
            rec.ports = dict(ports_)
            state["processes"].append(asdict(rec))
            self._write_state(state)

        def remaining() -> float:
            return max(deadline - time.monotonic(), 1.0)

        # 1. etcd -------------------------------------------------------------------
        etcd_url = f"http://127.0.0.1:{ports['etcd_client']}"
        peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
        spawn(
            "etcd",
            [
                str(binaries["etcd"]),
                "--name=phoenix",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=phoenix={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # throw-away test data: durability is not worth the latency
                "--quota-backend-bytes=4294967296",
                "--auto-compaction-mode=periodic",
                "--auto-compaction-retention=5m",
                "--log-level=warn",
            ],
            client=ports["etcd_client"],
            peer=ports["etcd_peer"],
        )
        self._wait_http("etcd", f"{etcd_url}/health", None, remaining())

        # 2. kube-apiserver -----------------------------------------------------------
        spawn(
            "kube-apiserver",
            [
                str(binaries["kube-apiserver"]),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--etcd-servers={etcd_url}",
                f"--client-ca-file={pki.ca_cert}",
                f"--tls-cert-file={pki.apiserver_cert}",
                f"--tls-private-key-file={pki.apiserver_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--authorization-mode=Node,RBAC",
                # The defaults (NamespaceLifecycle, LimitRanger, ServiceAccount, Priority,
                # DefaultTolerationSeconds, ResourceQuota, PodSecurity, webhooks, admission
                # policies, ...) stay on; kubeadm adds NodeRestriction, and so do we.
                "--enable-admission-plugins=NodeRestriction",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                # Aggregation layer (APIService, e.g. a metrics adapter) as kubeadm configures it.
                f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}",
                f"--proxy-client-cert-file={pki.client_cert(FRONT_PROXY_CLIENT)}",
                f"--proxy-client-key-file={pki.client_key(FRONT_PROXY_CLIENT)}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                # Everything listens on loopback, and Endpoints may not hold loopback addresses:
                # do not publish the API server as the `kubernetes` Service's endpoint.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--event-ttl=1h",
                # Every write, by whom (Metadata level): the tests measure that a converged
                # operator makes none, and users can see who changed what.
                f"--audit-policy-file={self._write_audit_policy()}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=200",
            ],
            secure=ports["apiserver"],
        )
        self._wait(
            "kube-apiserver",
            lambda: self._apiserver_ready(server),
            remaining(),
            "kube-apiserver /readyz",
        )

        # 3. controller-manager, scheduler, kwok ----------------------------------------
        cm = kubeconfigs["controller-manager"]
        spawn(
            "kube-controller-manager",
            [
                str(binaries["kube-controller-manager"]),
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['controller_manager']}",
                f"--kubeconfig={cm}",
                f"--authentication-kubeconfig={cm}",
                f"--authorization-kubeconfig={cm}",
                "--leader-elect=false",
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--cluster-name={CLUSTER_NAME}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--kube-api-qps=100",
                "--kube-api-burst=200",
                # Dynamic provisioning for PVCs (Milvus' data, model stores): the hostPath
                # provisioner is meant exactly for single-node test clusters.
                "--enable-hostpath-provisioner=true",
                "--profiling=false",
            ],
            secure=ports["controller_manager"],
        )
        sch = kubeconfigs["scheduler"]
        spawn(
            "kube-scheduler",
            [
                str(binaries["kube-scheduler"]),
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                f"--kubeconfig={sch}",
                f"--authentication-kubeconfig={sch}",
                f"--authorization-kubeconfig={sch}",
                "--leader-elect=false",
                "--profiling=false",
            ],
            secure=ports["scheduler"],
        )
        kwok_home = self.state_dir / "kwok-home"
        kwok_home.mkdir(exist_ok=True)
        spawn(
            "kwok",
            [
                str(binaries["kwok"]),
                f"--kubeconfig={kubeconfigs['kwok']}",
                f"--config={kwok_config}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--cidr={POD_CIDR}",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{ports['kwok']}",
            ],
            # kwok also reads ~/.kwok/kwok.yaml when present: give it a home of its own.
            env={"HOME": str(kwok_home)},
            http=ports["kwok"],
        )

        # 4. nodes, then wait for everything to be usable --------------------------------
        api = _Api(server, pki)
        self.ensure_nodes(api)
        self.ensure_storage_class(api)
        insecure = _insecure_ctx()
        self._wait_http(
            "kube-controller-manager",
            f"https://127.0.0.1:{ports['controller_manager']}/healthz",
            insecure,
            remaining(),
        )
        self._wait_http(
            "kube-scheduler", f"https://127.0.0.1:{ports['scheduler']}/healthz", insecure, remaining()
        )
        self._wait_http("kwok", f"http://127.0.0.1:{ports['kwok']}/healthz", None, remaining())
        self._wait("kwok", lambda: self._nodes_ready(api), remaining(), "the fake GPU nodes to be Ready")
        self._wait(
            "kube-controller-manager",
            lambda: api.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            remaining(),
            "the default ServiceAccount (serviceaccount controller)",
        )

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None) -> ProcessRecord:
        log_path = self.log_path(name)
        full_env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        full_env.update(env or {})
        self._log(f"starting {name}")
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                env=full_env,
                start_new_session=True,  # own process group: `down` signals the whole group
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        self._children.append(proc)
        stat = _proc_stat(proc.pid)
        return ProcessRecord(name, proc.pid, stat[1] if stat else 0, str(log_path), argv=argv, env=env or {})

    def _check_alive(self, component: str) -> None:
        for rec in self._records():
            if rec.name == component and not process_alive(rec.pid, rec.start_ticks):
                last = tail(Path(rec.log), 5).splitlines()
                hint = last[-1] if last else "(empty log)"
                raise ClusterError(f"{component} exited during start-up: {hint} (log: {rec.log})")

    def _wait(self, component: str, check: Callable[[], bool], timeout: float, what: str) -> None:
        def probe() -> bool:
            self._check_alive(component)
            return check()

        try:
            wait_for(
                probe,
                timeout=timeout,
                interval=0.1,
                max_interval=0.5,
                description=what,
                ignore=(OSError, ValueError),
            )
        except WaitTimeout as exc:
            raise ClusterError(f"{exc}; see {self.log_path(component)}") from None

    def _wait_http(self, component: str, url: str, ctx: ssl.SSLContext | None, timeout: float) -> None:
        self._wait(component, lambda: _http_ok(url, verify=ctx), timeout, f"{component} at {url}")

    # ----------------------------------------------------------------- one component

    def stop_component(self, name: str, *, grace: float = 10.0) -> None:
        """Stop one component (SIGTERM, then SIGKILL after *grace*) and wait until its ports are free.

        Its record stays, so :meth:`start_component` brings it back as it was: this is how the
        fault tests take the API server or etcd away from a running operator.
        """
        with build.file_lock(self._lock_path):
            rec = self._record(name)
            stop_process_groups([rec], grace=grace)
        self._wait_ports_free(rec)

    def start_component(self, name: str, *, timeout: float = 60.0) -> float:
        """Start a stopped component again with its command line, environment and ports.

        Waits until it is healthy (etcd ``/health``, the API server ``/readyz``, the others
        ``/healthz``) and returns the seconds that took. A component still running is left alone.
        """
        started = time.monotonic()
        with build.file_lock(self._lock_path):
            state = self._read_state()
            rec = self._record(name, state)
            if process_alive(rec.pid, rec.start_ticks):
                return 0.0
            if not rec.argv:
                raise ClusterError(f"{name} was started by an older version; restart the whole cluster")
            new = self._spawn(name, rec.argv, rec.env)
            new.ports = rec.ports
            assert state is not None
            state["processes"] = [asdict(new) if p["name"] == name else p for p in state["processes"]]
            self._write_state(state)
        self._wait(name, self._health_check(name), timeout, f"{name} to be healthy again")
        return time.monotonic() - started

    def restart_component(self, name: str, *, downtime: float = 0.0, timeout: float = 60.0) -> float:
        """Stop *name*, keep it down for *downtime* seconds, start it again; seconds until healthy."""
        self.stop_component(name)
        time.sleep(downtime)
        return self.start_component(name, timeout=timeout)

    def restart_apiserver(self, *, downtime: float = 0.0, timeout: float = 60.0) -> float:
        """Restart kube-apiserver on the same port; returns seconds from its start to ``/readyz``."""
        return self.restart_component("kube-apiserver", downtime=downtime, timeout=timeout)

    def restart_etcd(self, *, downtime: float = 0.0, timeout: float = 60.0) -> float:
        """Restart etcd on the same ports and data directory (no data is lost)."""
        return self.restart_component("etcd", downtime=downtime, timeout=timeout)

    def _record(self, name: str, state: dict[str, Any] | None = None) -> ProcessRecord:
        if name not in COMPONENTS:
            raise ClusterError(f"unknown component {name!r}; one of: {', '.join(COMPONENTS)}")
        for rec in self._records(state):
            if rec.name == name:
                return rec
        raise ClusterError(f"no {name} in {self.state_dir}; run `phoenix cluster up`")

    def _wait_ports_free(self, rec: ProcessRecord) -> None:
        try:
            wait_for(
                lambda: not any(port_is_listening(p, timeout=0.2) for p in rec.ports.values()),
                timeout=10,
                interval=0.05,
                description=f"{rec.name}'s ports to be free",
            )
        except WaitTimeout as exc:
            raise ClusterError(str(exc)) from None

    def _health_check(self, name: str) -> Callable[[], bool]:
        ports = self.ports
        if name == "etcd":
            return lambda: _http_ok(f"http://127.0.0.1:{ports['etcd_client']}/health")
        if name == "kube-apiserver":
            server = str(self.server)
            return lambda: self._apiserver_ready(server)
        if name == "kwok":
            return lambda: _http_ok(f"http://127.0.0.1:{ports['kwok']}/healthz")
        port = ports["controller_manager" if name == "kube-controller-manager" else "scheduler"]
        insecure = _insecure_ctx()
        return lambda: _http_ok(f"https://127.0.0.1:{port}/healthz", verify=insecure)

    def ensure_nodes(self, api: _Api | None = None) -> list[str]:
        """Register the fake GPU nodes (existing ones are left as they are); returns their names."""
        api = api or self.api()
        for node in render_nodes(self.nodes):
            code, body = api.request("POST", "/api/v1/nodes", node)
            if code not in (201, 409):
                raise ClusterError(f"could not create node {node['metadata']['name']}: HTTP {code} {body}")
        return self.nodes.names()

    def ensure_storage_class(self, api: _Api | None = None) -> None:
        """A default StorageClass so PVCs (StatefulSet volumeClaimTemplates) bind."""
        api = api or self.api()
        code, body = api.request("POST", "/apis/storage.k8s.io/v1/storageclasses", DEFAULT_STORAGE_CLASS)
        if code not in (201, 409):
            raise ClusterError(f"could not create the default StorageClass: HTTP {code} {body}")

    @property
    def audit_log(self) -> Path:
        """JSON lines, one per write request (Metadata level): who wrote what, when."""
        return self.log_dir / "audit.log"

    def _write_audit_policy(self) -> Path:
        path = self.state_dir / "audit-policy.yaml"
        path.write_text(AUDIT_POLICY)
        return path

    def _nodes_ready(self, api: _Api) -> bool:
        code, body = api.request("GET", "/api/v1/nodes")
        if code != 200:
            return False
        by_name = {n["metadata"]["name"]: n for n in body.get("items", [])}
        for name in self.nodes.names():
            node = by_name.get(name)
            if node is None:
                return False
            conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            taints = {t["key"] for t in node.get("spec", {}).get("taints", [])}
            if conditions.get("Ready") != "True" or "node.kubernetes.io/not-ready" in taints:
                return False
        return True

    # ----------------------------------------------------------------- down

    def down(self) -> bool:
        """Stop every recorded process (group) and delete the state folder; False if none existed."""
        if not self.state_dir.exists():
            return False
        with build.file_lock(self._lock_path):
            return self._down()

    def _down(self) -> bool:
        state = self._read_state()
        existed = state is not None or (self.state_dir / _MARKER).exists()
        records = self._records(state)
        stop_process_groups(records)
        for proc in self._children:
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        self._children.clear()
        ports = [int(p) for p in (state or {}).get("ports", {}).values()]
        with contextlib.suppress(WaitTimeout):
            wait_for(lambda: not any(port_is_listening(p, timeout=0.2) for p in ports), timeout=10,
                     description="the cluster's ports to be free")  # fmt: skip
        if (self.state_dir / _MARKER).exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return existed

    def logs(self) -> Iterator[tuple[str, Path]]:
        """(component, log path) for each component that has a log."""
        for name in COMPONENTS:
            path = self.log_path(name)
            if path.exists():
                yield name, path


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
