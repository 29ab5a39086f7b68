"""Shared helpers of the chart, GitOps and Argo CD health tests.

- ``helm``/``render``: the pinned helm (built from Go modules like the cluster's binaries) on the
  chart in ``charts/phoenix-operator``;
- ``third_party_crds``: the real CRDs of Argo CD, Flux and the Prometheus Operator at pinned
  versions, taken from their Go module zips (the Go module proxy is the one registry these
  tests reach) and cached per user under ``~/.cache/phoenix-operator/crds`` — never committed;
- ``service_account_kubeconfig``: a kubeconfig that authenticates as a ServiceAccount through
  the TokenRequest API, so the operator runs with exactly the chart's RBAC;
- ``ChartOperator``: the real operator process started with the chart's own arguments and
  environment, as the StatefulSet's pod would run it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from phoenix_operator.cluster import build
from phoenix_operator.cluster.local import tail
from phoenix_operator.cluster.ports import pick_ports
from phoenix_operator.cluster.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "phoenix-operator"
GITOPS = ROOT / "examples" / "gitops"
HEALTH_LUA = GITOPS / "argocd" / "phoenixdeployment-health.lua"
#: The Kubernetes version the local cluster runs (and the chart is validated against).
KUBE_VERSION = build.KUBERNETES_VERSION.lstrip("v")


# ------------------------------------------------------------------------------------------ helm


def helm_binary() -> Path:
    """The cached helm, built on first use (a no-op when `make tools` already built it)."""
    build.build_tool("helm")
    return build.binary_path("helm")


def helm(
    *args: str, env: Mapping[str, str] | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm_binary()), *args],
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def render(
    *values: str,
    api_versions: Sequence[str] = (),
    namespace: str = "phoenix-system",
    release: str = "phx",
    values_file: Path | None = None,
) -> list[dict[str, Any]]:
    """``helm template`` of the chart for the pinned Kubernetes version; ``values`` are --set items."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    for value in values:
        args += ["--set", value]
    for api in api_versions:
        args += ["--api-versions", api]
    if values_file is not None:
        args += ["--values", str(values_file)]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def by_kind(docs: Sequence[Mapping[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [dict(d) for d in docs if d["kind"] == kind]


# ------------------------------------------------------------------------- third-party CRDs


@dataclass(frozen=True)
class GoModuleFiles:
    """Files of one Go module version (its zip holds the repository's tree at that tag)."""

    module: str
    version: str
    paths: tuple[str, ...]


THIRD_PARTY: dict[str, GoModuleFiles] = {
    "argocd": GoModuleFiles(
        "github.com/argoproj/argo-cd/v3", "v3.2.0", ("manifests/crds/application-crd.yaml",)
    ),
    "flux-source": GoModuleFiles(
        "github.com/fluxcd/source-controller",
        "v1.7.3",
        (
            "config/crd/bases/source.toolkit.fluxcd.io_gitrepositories.yaml",
            "config/crd/bases/source.toolkit.fluxcd.io_helmrepositories.yaml",
        ),
    ),
    "flux-helm": GoModuleFiles(
        "github.com/fluxcd/helm-controller",
        "v1.4.3",
        ("config/crd/bases/helm.toolkit.fluxcd.io_helmreleases.yaml",),
    ),
    "flux-kustomize": GoModuleFiles(
        "github.com/fluxcd/kustomize-controller",
        "v1.7.3",
        ("config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml",),
    ),
    "prometheus-operator": GoModuleFiles(
        "github.com/prometheus-operator/prometheus-operator",
        "v0.85.0",
        (
            "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
            "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
            "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
        ),
    ),
}


def crd_cache_root() -> Path:
    return build.cache_root().parent / "crds"


def third_party_crds(name: str) -> list[Path]:
    """The CRD files of ``THIRD_PARTY[name]``, downloaded once (``go mod download``) and cached."""
    spec = THIRD_PARTY[name]
    folder = crd_cache_root() / f"{spec.module.replace('/', '_')}@{spec.version}"
    wanted = [folder / Path(p).name for p in spec.paths]
    if all(p.is_file() for p in wanted):
        return wanted
    root = crd_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with build.file_lock(root / ".download.lock"):
        if all(p.is_file() for p in wanted):
            return wanted
        go = build.find_go()
        with tempfile.TemporaryDirectory(prefix=".gomod-", dir=root) as tmp:
            env = dict(os.environ) | {
                "GOMODCACHE": str(Path(tmp) / "mod"),
                "GOFLAGS": "-mod=mod",
                "GOTOOLCHAIN": "local",
            }
            try:
                out = subprocess.run(
                    [go, "mod", "download", "-json", f"{spec.module}@{spec.version}"],
                    env=env,
                    cwd=tmp,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                info = json.loads(out.stdout or "{}")
                if out.returncode != 0 or "Dir" not in info:
                    raise RuntimeError(
                        f"cannot download {spec.module}@{spec.version} from the Go module proxy: "
                        f"{info.get('Error') or out.stderr.strip()}"
                    )
                staging = Path(tmp) / "out"
                staging.mkdir()
                for path in spec.paths:
                    shutil.copyfile(Path(info["Dir"]) / path, staging / Path(path).name)
                if folder.exists():
                    shutil.rmtree(folder)
                staging.rename(folder)
            finally:
                # The module cache is read-only on disk; `go clean` removes it properly.
                subprocess.run([go, "clean", "-modcache"], env=env, cwd=tmp, capture_output=True, timeout=300)
    return wanted


# ---------------------------------------------------------------------- identity and operator


def service_account_kubeconfig(kube_cluster: Any, namespace: str, name: str, path: Path) -> Path:
    """A kubeconfig for ServiceAccount ``namespace/name``: a TokenRequest token, the cluster's CA."""
    token = kube_cluster.kubectl("create", "token", name, "-n", namespace, "--duration=2h").stdout.strip()
    admin = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    cluster = admin["clusters"][0]
    user = f"system:serviceaccount:{namespace}:{name}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


@dataclass
class ChartOperator:
    """One operator replica started exactly as the chart's StatefulSet starts pod ``index``.

    The container's args and env come from the installed StatefulSet (the kubelet's ``$(VAR)``
    expansion and downward-API fields resolved here); only the liveness and metrics addresses
    move to free loopback ports, and the identity is the ServiceAccount's kubeconfig.
    """

    statefulset: Mapping[str, Any]
    index: int
    kubeconfig: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    liveness_url: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    def argv_and_env(self) -> tuple[list[str], dict[str, str]]:
        pod_name = f"{self.statefulset['metadata']['name']}-{self.index}"
        container = self.statefulset["spec"]["template"]["spec"]["containers"][0]
        env: dict[str, str] = {}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
                continue
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            if path == "metadata.name":
                env[var["name"]] = pod_name
            elif path == "metadata.labels['apps.kubernetes.io/pod-index']":
                env[var["name"]] = str(self.index)
            else:
                raise AssertionError(f"unexpected downward-API field {path}")
        (health, metrics) = pick_ports(2)
        self.liveness_url = f"http://127.0.0.1:{health}/healthz"
        args = []
        for arg in container["args"]:
            for name, value in env.items():
                arg = arg.replace(f"$({name})", value)
            if arg.startswith("--liveness="):
                arg = f"--liveness={self.liveness_url}"
            elif arg.startswith("--metrics-port="):
                arg = f"--metrics-port={metrics}"
            args.append(arg)
        env["HOME"] = str(self.log_path.parent)  # the pod's /tmp emptyDir
        return [sys.executable, "-m", "phoenix_operator.cli", *args], env

    def start(self) -> None:
        argv, pod_env = self.argv_and_env()
        env = dict(os.environ) | pod_env | self.extra_env | {"KUBECONFIG": str(self.kubeconfig)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self._alive, timeout=60, interval=0.2, description=f"operator replica {self.index} liveness")

    def _alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
        with urllib.request.urlopen(self.liveness_url, timeout=2) as response:
            return bool(response.status == 200)

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None:
            return
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)


# ------------------------------------------------------------------------- Argo CD health


#: Health statuses Argo CD accepts from a script (anything else becomes Unknown).
ARGOCD_HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def argocd_health(obj: Mapping[str, Any], script: str | None = None) -> dict[str, Any]:
    """Run the PhoenixDeployment health script on ``obj`` as Argo CD does.

    Argo CD runs health scripts in gopher-lua (Lua 5.1) with only the base, table and package
    libraries and a reduced ``os``; the same is set up here on lupa's Lua 5.1, so a script that
    leans on ``string``/``math`` (or on string methods) fails here as it would there. The object
    goes in as Argo CD passes it: the JSON of the live resource as nested tables.
    """
    import lupa.lua51 as lua51

    runtime = lua51.LuaRuntime(unpack_returned_tuples=False, register_eval=False, register_builtins=False)
    runtime.execute(
        "debug.setmetatable('', nil)\n"
        "string, math, io, debug, coroutine = nil, nil, nil, nil, nil\n"
        "os = {time = os.time, date = os.date, clock = os.clock}\n"
    )
    plain = json.loads(json.dumps(obj))
    runtime.globals().obj = runtime.table_from(plain, recursive=True)
    result = runtime.execute(script if script is not None else HEALTH_LUA.read_text())
    if result is None:
        return {}
    health = {str(k): v for k, v in result.items()}
    if health.get("status") not in ARGOCD_HEALTH_STATUSES:
        raise AssertionError(f"Argo CD would report Unknown for {health!r}")
    return health
