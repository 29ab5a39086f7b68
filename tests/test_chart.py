"""The Helm chart, the image and the GitOps examples.

Static part: ``helm lint``; ``helm template`` validated against the Kubernetes v1.34 schemas
(kubernetes-validate) and the chart's own CRDs; values.schema.json refusing bad values with a
message naming the field; the RBAC rules equal to the set audited from the operator's code; the
alerts unit-tested with ``promtool test rules``; the dashboard's queries parsed and checked
against the metrics that exist; the Dockerfile read for pinning and its user.

Integration part (the local cluster): ``helm install`` into a namespace that enforces the
"restricted" Pod Security Standard, with the Prometheus Operator's CRDs present so the
ServiceMonitor and PrometheusRule are created; then the real operator runs as the chart's
ServiceAccount (a TokenRequest token, the chart's own args and env), two replicas peering,
through every example, a control-loop cycle that scales, and a prune. The operator log must
hold no 403, every write in the audit log must be one the chart grants, and `kubectl auth
can-i --list` must show nothing beyond the audited set. The GitOps objects are applied
server-side against the real Argo CD and Flux CRDs, taken from their Go modules.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes import client
from packaging.requirements import Requirement

from api_cases import valid_doc
from chart_support import (
    CHART,
    GITOPS,
    KUBE_VERSION,
    ROOT,
    ChartOperator,
    argocd_health,
    by_kind,
    helm,
    render,
    service_account_kubeconfig,
    third_party_crds,
)
from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.api.crdgen import CRD_FILENAME, render_crd_yaml
from phoenix_operator.api.models import PhoenixDeploymentSpec
from phoenix_operator.cluster.ports import pick_ports
from phoenix_operator.cluster.waiting import WaitTimeout, wait_for
from phoenix_operator.local.prometheus import LocalPrometheus, ScrapeTarget
from phoenix_operator.local.triton_metrics import TritonMetricsServer, TritonMetricsState
from phoenix_operator.reconcile.reconciler import OPTIONAL_PRUNABLE_KINDS, PRUNABLE_KINDS
from phoenix_operator.render.objects import HTTP_PORT, Capabilities, Target, render_all

MONITORING = "monitoring.coreos.com/v1"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
DASHBOARD = CHART / "dashboards" / "phoenix-grafana.json"

# ------------------------------------------------------------------------------------------------
# The audited set: every API call the operator makes, with where it is made. A rule the chart
# grants must be in here and everything in here must be granted (tests below, both modes).
# ------------------------------------------------------------------------------------------------
#: Child kinds: Kube.apply (get, then server-side apply = patch, authorised as create when the
#: object is new), Reconciler._prune (list by label, delete), Reconciler._finish / _job_status /
#: _managed_milvus_waiting and ControlLoop.step (get, until the child watch has seen the Deployment).
CHILD_VERBS = frozenset({"get", "list", "create", "patch", "delete"})
AUDITED: dict[tuple[str, str], frozenset[str]] = {
    # Kopf: list+watch of the watched namespaces, patch for its finalizer and progress/diff-base
    # annotations; reconcile.handlers.run_exclusive: get (fresh copy under the lock).
    (API_GROUP, "phoenixdeployments"): frozenset({"get", "list", "watch", "patch"}),
    # Kube.patch_status (reconciler and control loop).
    (API_GROUP, "phoenixdeployments/status"): frozenset({"patch"}),
    # Kube.post_event: core/v1 Events, create only.
    ("", "events"): frozenset({"create"}),
    ("", "configmaps"): CHILD_VERBS,
    ("", "services"): CHILD_VERBS,
    # + Kube.apply_replicas (autoscaler's field manager); watched by handlers.on_child_event.
    ("apps", "deployments"): CHILD_VERBS | {"watch"},
    ("apps", "statefulsets"): CHILD_VERBS | {"watch"},
    ("policy", "poddisruptionbudgets"): CHILD_VERBS,
    ("batch", "cronjobs"): CHILD_VERBS | {"watch"},
    ("batch", "jobs"): frozenset({"list", "watch"}),  # handlers.on_child_event: finished jobs
    ("networking.k8s.io", "networkpolicies"): CHILD_VERBS,
    ("monitoring.coreos.com", "podmonitors"): CHILD_VERBS,  # only where the API is served
    ("monitoring.coreos.com", "prometheusrules"): CHILD_VERBS,
    ("milvus.io", "milvuses"): CHILD_VERBS,  # only where the Milvus Operator's API is served
    ("", "pods"): frozenset({"list"}),  # Reconciler._finish: unschedulable pods, GPUs in use
    # Kube.secret_data: credentialsSecret, tokenSecretRef, the generated ones; Kube.create_if_absent:
    # the generated Triton control key and Milvus root password (never updated, so no patch).
    ("", "secrets"): frozenset({"get", "create"}),
    ("discovery.k8s.io", "endpointslices"): frozenset({"list"}),  # actuators.ready_endpoints
}
#: Kopf peering (namespaced mode: kopfpeerings; cluster mode: clusterkopfpeerings): the watcher
#: lists and watches, the keep-alive patches only the chart's peering object.
PEERING_VERBS = {"list": "", "watch": "", "patch": "phoenix-operator"}
#: Granted to every authenticated identity by Kubernetes' built-in roles, not by the chart.
BUILTIN = {
    ("authentication.k8s.io", "selfsubjectreviews", "create", ""),
    ("authorization.k8s.io", "selfsubjectaccessreviews", "create", ""),
    ("authorization.k8s.io", "selfsubjectrulesreviews", "create", ""),
}

Grant = tuple[str, str, str, str]  # (apiGroup, resource[/subresource], verb, resourceName or "")


def audited_grants(peering: str = "kopfpeerings") -> set[Grant]:
    grants = {(g, r, v, "") for (g, r), verbs in AUDITED.items() for v in verbs}
    grants |= {("kopf.dev", peering, v, name) for v, name in PEERING_VERBS.items()}
    return grants


def rule_grants(rules: Sequence[Mapping[str, Any]]) -> set[Grant]:
    return {
        (g, r, v, n)
        for rule in rules
        for g in rule.get("apiGroups", [])
        for r in rule.get("resources", [])
        for v in rule["verbs"]
        for n in rule.get("resourceNames") or [""]
    }


# ------------------------------------------------------------------------------------------------
# helm lint / template / schemas
# ------------------------------------------------------------------------------------------------


def test_helm_lint_is_clean() -> None:
    for mode in ("namespaced", "cluster"):
        result = helm(
            "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, "--set", f"watch.mode={mode}"
        )
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout
        assert "0 chart(s) failed" in result.stdout


RENDERINGS = {
    "namespaced": ["watch.namespaces={team-a,team-b}"],
    "cluster": ["watch.mode=cluster"],
    "single-standalone": ["replicaCount=1", "peering.enabled=false", "metrics.enabled=false"],
}


def _validate_builtin(doc: Mapping[str, Any]) -> bool:
    """Strict kubernetes-validate for v1.34; False for kinds it has no schema of (custom resources)."""
    try:
        kubernetes_validate.validate(dict(doc), KUBE_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return False
    return True


def _crd_schemas(paths: Sequence[Path]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every served version in the CRD files."""
    out = {}
    for path in paths:
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd:
                continue
            for version in crd["spec"]["versions"]:
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                out[key] = version["schema"]["openAPIV3Schema"]
    return out


@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_rendered_manifests_validate_against_kubernetes_schemas(rendering: str) -> None:
    docs = render(*RENDERINGS[rendering], api_versions=[MONITORING])
    crds = _crd_schemas(sorted((CHART / "crds").glob("*.yaml")))
    custom = []
    for doc in docs:
        if not _validate_builtin(doc):
            custom.append(doc)
    # The chart's own custom resources against the CRDs it ships; the Prometheus Operator's are
    # checked by the real API server (test_helm_install_...), which has their CRDs there.
    for doc in custom:
        key = (doc["apiVersion"], doc["kind"])
        if doc["apiVersion"] == MONITORING:
            continue
        assert key in crds, f"{key} has neither a Kubernetes schema nor a CRD in the chart"
        jsonschema.validate(doc, crds[key])
    assert {d["kind"] for d in docs} >= {"ServiceAccount", "StatefulSet"}


def test_schema_validation_is_not_vacuous() -> None:
    """A misspelt field in the StatefulSet and a wrong type both fail the same validation."""
    (sts,) = by_kind(render(), "StatefulSet")
    broken = copy.deepcopy(sts)
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)
    broken = copy.deepcopy(sts)
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


def test_chart_crds_are_the_generated_ones_and_kopfs() -> None:
    chart_crd = CHART / "crds" / CRD_FILENAME
    assert chart_crd.read_text() == render_crd_yaml() == (ROOT / "crds" / CRD_FILENAME).read_text()
    names = {
        crd["metadata"]["name"]
        for path in (CHART / "crds").glob("*.yaml")
        for crd in yaml.safe_load_all(path.read_text())
        if crd
    }
    assert names == {
        f"{PLURAL}.{API_GROUP}",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }


def test_monitoring_objects_only_where_their_api_is_served() -> None:
    without = {d["kind"] for d in render()}
    with_api = {d["kind"] for d in render(api_versions=[MONITORING])}
    assert not without & {"ServiceMonitor", "PrometheusRule"}
    assert with_api >= {"ServiceMonitor", "PrometheusRule"}
    (monitor,) = by_kind(render(api_versions=[MONITORING]), "ServiceMonitor")
    (service,) = by_kind(render(), "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    # The operator's series carry the PhoenixDeployment's namespace label; it must survive scraping.
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


BAD_VALUES = [
    ("replicaCount=two", "/replicaCount", "want integer"),
    ("watch.mode=everywhere", "/watch/mode", "one of 'namespaced', 'cluster'"),
    ("watch.namespaces={Not_A_Namespace}", "/watch/namespaces/0", "does not match pattern"),
    ("image.digest=latest", "/image/digest", "does not match pattern"),
    ("metrics.port=99999", "/metrics/port", "maximum"),
    ("securityContext.runAsUser=0", "/securityContext/runAsUser", "minimum"),
    ("rbac.create=yes", "/rbac/create", "want boolean"),
    ("metrics.prometheusRule.errorRate=2", "/metrics/prometheusRule/errorRate", "maximum"),
    ("metrics.serviceMonitor.interval=30", "/metrics/serviceMonitor/interval", "want string"),
    ("operator.resyncSeconds=0", "/operator/resyncSeconds", "exclusiveMinimum"),
    ("replicas=2", "additional properties 'replicas' not allowed", ""),
]


@pytest.mark.parametrize(("value", "where", "why"), BAD_VALUES, ids=[v[0] for v in BAD_VALUES])
def test_values_schema_rejects_bad_values_naming_the_field(value: str, where: str, why: str) -> None:
    args = ["template", "x", str(CHART), "--kube-version", KUBE_VERSION, "--set", value]
    result = helm(*args, check=False)
    assert result.returncode != 0, f"--set {value} was accepted"
    assert "don't meet the specifications of the schema" in result.stderr, result.stderr
    assert where in result.stderr and why in result.stderr, result.stderr


def test_inconsistent_values_fail_with_a_reason() -> None:
    result = helm(
        "template",
        "x",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "peering.enabled=false",
        check=False,
    )
    assert result.returncode != 0 and "needs peering.enabled=true" in result.stderr, result.stderr
    result = helm(
        "template",
        "x",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "metrics.port=8080",
        check=False,
    )
    assert result.returncode != 0 and "metrics.port and probes.port" in result.stderr, result.stderr


# ------------------------------------------------------------------------------------------------
# The operator pod
# ------------------------------------------------------------------------------------------------


def test_operator_pod_is_restricted_probed_and_bounded() -> None:
    (sts,) = by_kind(render(), "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    # Read-only root: the one writable place is an emptyDir on /tmp (the client's discovery cache).
    assert [v["mountPath"] for v in container["volumeMounts"]] == ["/tmp"]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    assert not any("hostPath" in v for v in pod["volumes"])
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 8081}
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert "--metrics-port=8081" in container["args"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_replicas_peer_with_distinct_priorities() -> None:
    docs = render("watch.namespaces={team-a,team-b}")
    (sts,) = by_kind(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 2
    container = sts["spec"]["template"]["spec"]["containers"][0]
    # Kopf freezes every replica when two live peers share a priority: each pod's ordinal is its own.
    assert "--priority=$(POD_INDEX)" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "--peering=phoenix-operator" in container["args"]
    assert [a for a in container["args"] if a.startswith("--namespace=")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    # Kopf never creates peering objects: the chart does, in every watched namespace.
    peerings = by_kind(docs, "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings) == [
        ("team-a", "phoenix-operator"),
        ("team-b", "phoenix-operator"),
    ]
    (cluster_sts,) = by_kind(render("watch.mode=cluster"), "StatefulSet")
    assert "--all-namespaces" in cluster_sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [p["metadata"]["name"] for p in by_kind(render("watch.mode=cluster"), "ClusterKopfPeering")] == [
        "phoenix-operator"
    ]


# ------------------------------------------------------------------------------------------------
# RBAC as rendered
# ------------------------------------------------------------------------------------------------


def test_namespaced_rbac_is_the_audited_set_in_each_watched_namespace_only() -> None:
    docs = render("watch.namespaces={team-a,team-b}")
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert rule_grants(role["rules"]) == audited_grants("kopfpeerings")
    bindings = by_kind(docs, "RoleBinding")
    (sa,) = by_kind(docs, "ServiceAccount")
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "phoenix-system"}
        ]
    # Watching nothing but the release namespace by default.
    (role,) = by_kind(render(), "Role")
    assert role["metadata"]["namespace"] == "phoenix-system"


def test_cluster_rbac_is_the_same_audited_set() -> None:
    docs = render("watch.mode=cluster")
    assert not by_kind(docs, "Role")
    (role,) = by_kind(docs, "ClusterRole")
    assert rule_grants(role["rules"]) == audited_grants("clusterkopfpeerings")


def test_no_wildcards_no_secret_listing_no_escalation() -> None:
    for docs in (render(), render("watch.mode=cluster")):
        for role in by_kind(docs, "Role") + by_kind(docs, "ClusterRole"):
            for group, resource, verb, _ in rule_grants(role["rules"]):
                assert "*" not in (group, resource, verb)
                assert verb not in {"escalate", "bind", "impersonate", "deletecollection", "update"}
                assert group != "rbac.authorization.k8s.io"
                if resource == "secrets":
                    assert verb in {"get", "create"}


def test_optional_grants_can_be_dropped() -> None:
    (role,) = by_kind(render("rbac.milvusOperator=false", "rbac.prometheusOperator=false"), "Role")
    groups = {g for g, *_ in rule_grants(role["rules"])}
    assert "milvus.io" not in groups and "monitoring.coreos.com" not in groups


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    return lower + ("es" if lower.endswith("s") else "s")


def test_every_kind_the_operator_renders_or_prunes_is_granted() -> None:
    """Guards the audit: a new child kind in the renderer without a chart grant fails here."""
    (doc,) = [
        d
        for d in yaml.safe_load_all((ROOT / "examples" / "production.yaml").read_text())
        if d and d["kind"] == "PhoenixDeployment"
    ]
    spec = PhoenixDeploymentSpec.model_validate(doc["spec"])
    rendered = set()
    for caps in (Capabilities(), Capabilities(milvus_operator=True, prometheus_operator=True)):
        rendered |= {
            (o["apiVersion"], o["kind"])
            for o in render_all(Target("x", "ns", uid="u"), spec, capabilities=caps)
        }
    kinds = rendered | set(PRUNABLE_KINDS) | set(OPTIONAL_PRUNABLE_KINDS)
    for api_version, kind in kinds:
        group = api_version.rpartition("/")[0]
        assert AUDITED.get((group, _plural(kind)), frozenset()) >= CHILD_VERBS, (
            f"{kind} ({api_version}) not granted"
        )


# ------------------------------------------------------------------------------------------------
# Dockerfile
# ------------------------------------------------------------------------------------------------


def test_dockerfile_pins_its_base_and_runs_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    (arg,) = [line for line in lines if line.startswith("ARG PYTHON_IMAGE=")]
    image = arg.split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", image), image
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms and all(line.split()[1] == "${PYTHON_IMAGE}" for line in froms), froms
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert (
        int(uid) == values["securityContext"]["runAsUser"]
        and int(gid) == values["securityContext"]["runAsGroup"]
    )
    assert int(uid) > 0
    # Runtime dependencies at the lock's versions, and the entry point the chart's args expect.
    assert any("--constraint requirements.lock" in line for line in lines)
    assert "COPY requirements.lock" in text
    assert not re.search(r"(?m)^\s*ADD\s", text) and ":latest" not in text
    entrypoint = next(line for line in lines if line.startswith("ENTRYPOINT"))
    assert json.loads(entrypoint.split(" ", 1)[1]) == ["phoenix"]
    (sts,) = by_kind(render(), "StatefulSet")
    assert sts["spec"]["template"]["spec"]["containers"][0]["args"][0] == "run"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[line.strip() for line in ignore].index("*")] == "*"


def test_requirements_lock_covers_every_runtime_dependency() -> None:
    """`pip install --constraint requirements.lock .` pins the whole closure only if the lock has it."""
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[_canonical(name)] = version
    seen: set[str] = set()
    todo = [("phoenix-operator", frozenset[str]())]
    while todo:
        name, extras = todo.pop()
        dist = metadata.distribution(name)
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras or {""}):
                continue
            key = _canonical(req.name)
            if key in seen:
                continue
            seen.add(key)
            assert key in lock, f"{req.name} (needed by {name}) is missing from requirements.lock"
            assert lock[key] == metadata.version(req.name), f"{req.name}: lock {lock[key]}"
            todo.append((req.name, frozenset(req.extras)))
    assert {"kopf", "kubernetes", "pydantic"} <= seen


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------------------------------------
# Alerts and dashboard
# ------------------------------------------------------------------------------------------------


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _series(name: str, labels: Mapping[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


@pytest.mark.prometheus
def test_alerts_fire_exactly_when_they_should(tmp_path: Path) -> None:
    (rule,) = by_kind(render(api_versions=[MONITORING]), "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    a, b = {"namespace": "a"}, {"namespace": "b"}
    job = {"job": "phx-phoenix-operator-metrics", "namespace": "phoenix-system"}
    series = [
        # TTFT: the control loop's view, and Triton's histogram where no loop runs.
        _series("phoenix_observed_ttft_p95_seconds", a | {"deployment": "slow"}, "5x20"),
        _series("phoenix_observed_ttft_p95_seconds", a | {"deployment": "fast"}, "1x20"),
        _series(
            "nv_inference_first_response_histogram_ms_bucket",
            b | {"phoenix_deployment": "hist", "le": "1000"},
            "0x20",
        ),
        _series(
            "nv_inference_first_response_histogram_ms_bucket",
            b | {"phoenix_deployment": "hist", "le": "5000"},
            "0+100x20",
        ),
        _series(
            "nv_inference_first_response_histogram_ms_bucket",
            b | {"phoenix_deployment": "hist", "le": "+Inf"},
            "0+100x20",
        ),
        # Errors: 10 % on "bad", 0.1 % on "good".
        _series("nv_inference_request_success", a | {"phoenix_deployment": "bad", "model": "m"}, "0+90x20"),
        _series(
            "nv_inference_request_failure",
            a | {"phoenix_deployment": "bad", "model": "m", "reason": "OTHER"},
            "0+10x20",
        ),
        _series("nv_inference_request_success", a | {"phoenix_deployment": "good", "model": "m"}, "0+999x20"),
        _series(
            "nv_inference_request_failure",
            a | {"phoenix_deployment": "good", "model": "m", "reason": "OTHER"},
            "0+1x20",
        ),
        _series("phoenix_eval_f1", a | {"deployment": "slow"}, "0.7x20"),
        _series("phoenix_eval_f1", a | {"deployment": "fast"}, "0.9x20"),
        _series("phoenix_metrics_stale", a | {"deployment": "slow"}, "1x20"),
        _series("phoenix_metrics_stale", a | {"deployment": "fast"}, "0x20"),
        _series("up", job | {"pod": "phx-phoenix-operator-0"}, "0x20"),
        _series("up", job | {"pod": "phx-phoenix-operator-1"}, "0x20"),
    ]

    def alert(labels: Mapping[str, str], summary: str, description: str | None = None) -> dict[str, Any]:
        annotations = {"summary": summary} | ({"description": description} if description else {})
        return {"exp_labels": dict(labels), "exp_annotations": annotations}

    ttft_desc = (
        "Time to first token is above target; status.decisions of the PhoenixDeployment says what "
        "the control loop does about it."
    )
    down_desc = "PhoenixDeployments are neither reconciled nor autoscaled while it is down."
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": "PhoenixTTFTP95AboveTarget",
                        "exp_alerts": [
                            alert(
                                {"severity": "warning", "namespace": "a", "deployment": "slow"},
                                "TTFT p95 of a/slow is 5s (target 3s)",
                                ttft_desc,
                            ),
                            alert(
                                {"severity": "warning", "namespace": "b", "deployment": "hist"},
                                "TTFT p95 of b/hist is 4.8s (target 3s)",
                                ttft_desc,
                            ),
                        ],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "PhoenixErrorRateHigh",
                        "exp_alerts": [
                            alert(
                                {"severity": "critical", "namespace": "a", "phoenix_deployment": "bad"},
                                "Inference error rate of a/bad is 10% (limit 0.01)",
                            )
                        ],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "PhoenixF1BelowSLA",
                        "exp_alerts": [
                            alert(
                                {"severity": "warning", "namespace": "a", "deployment": "slow"},
                                "Offline-evaluation F1 of a/slow is 0.7 (SLA 0.8)",
                            )
                        ],
                    },
                    {"eval_time": "9m", "alertname": "PhoenixMetricsStale", "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": "PhoenixMetricsStale",
                        "exp_alerts": [
                            alert(
                                {"severity": "warning", "namespace": "a", "deployment": "slow"},
                                "Metrics of a/slow are stale; the control loop holds replicas and batching"
                                " still",
                            )
                        ],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "PhoenixOperatorDown",
                        "exp_alerts": [
                            alert(
                                {"severity": "critical"},
                                "No replica of the Phoenix operator"
                                " (phoenix-system/phx-phoenix-operator-metrics) is up",
                                down_desc,
                            )
                        ],
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": [_series("up", job | {"pod": "phx-phoenix-operator-1"}, "1x20")],
                "alert_rule_test": [
                    {"eval_time": "15m", "alertname": "PhoenixOperatorDown", "exp_alerts": []}
                ],
            },
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = _promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    queries += [a["expr"] for a in board["annotations"]["list"] if a.get("expr")]
    return queries


def _promql_for_promtool(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "5m")
        .replace("$namespace", ".*")
        .replace("$deployment", ".*")
        .replace("${datasource}", "")
    )


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr))


def _known_metric_names() -> set[str]:
    """Everything the project exports or reads: Triton's (as emulated), the operator's own, the
    metric source's queries, the operator's per-deployment alerts (phoenix_eval_f1), and `up`."""
    from prometheus_client.metrics import MetricWrapperBase

    from phoenix_operator.clients.prometheus import build_queries
    from phoenix_operator.render.objects import prometheus_rule
    from phoenix_operator.runtime import metrics as opmetrics

    state = TritonMetricsState(model="m")
    state.gpu_utilization = 0.5
    state.record_request(1.0, 0.5, 0.5, priority_class="urgent", ttft_s=0.5)
    names = {s.name for family in state.families() for s in family.samples}
    for obj in vars(opmetrics).values():
        if isinstance(obj, MetricWrapperBase):
            names |= {f.name + ("_total" if f.type == "counter" else "") for f in obj.describe()}
    for query in build_queries('phoenix_deployment="x"', "m", 60).values():
        names |= _metric_names(query)
    spec = PhoenixDeploymentSpec.model_validate(valid_doc("x")["spec"])
    for rule in prometheus_rule(Target("x", "ns"), spec)["spec"]["groups"][0]["rules"]:
        names |= _metric_names(rule["expr"])
    return names | {"up"}


def test_dashboard_and_alerts_use_metrics_that_exist() -> None:
    board = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in board["panels"]]
    for needed in ("TTFT p95 by priority class", "Replicas", "batch size", "Decisions"):
        assert any(needed.lower() in t.lower() for t in titles), f"no panel about {needed!r}: {titles}"
    known = _known_metric_names()
    (rule,) = by_kind(render(api_versions=[MONITORING]), "PrometheusRule")
    exprs = _dashboard_queries() + [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    used = set().union(*(_metric_names(e) for e in exprs))
    assert used - known == set(), f"unknown metrics: {sorted(used - known)}"
    assert {
        "phoenix_request_ttft_seconds_bucket",
        "phoenix_decisions_total",
        "phoenix_desired_replicas",
    } <= used
    # The chart ships the same file (Grafana sidecar ConfigMap).
    (cm,) = [c for c in by_kind(render(), "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert json.loads(cm["data"]["phoenix-grafana.json"]) == board


@pytest.mark.prometheus
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"phoenix_dashboard:query{i}", "expr": _promql_for_promtool(q)}
        for i, q in enumerate(_dashboard_queries())
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


# ------------------------------------------------------------------------------------------------
# GitOps examples
# ------------------------------------------------------------------------------------------------

GITOPS_FILES = sorted(p for p in GITOPS.rglob("*.yaml"))


def test_gitops_examples_point_at_this_repository_and_valid_values(tmp_path: Path) -> None:
    docs = {p.name: yaml.safe_load(p.read_text()) for p in GITOPS_FILES}
    app = docs["application.yaml"]
    assert (ROOT / app["spec"]["source"]["path"] / "Chart.yaml").is_file()
    workloads = docs["application-workloads.yaml"]
    assert (ROOT / workloads["spec"]["source"]["path"]).resolve() == (ROOT / "examples").resolve()
    assert workloads["spec"]["source"]["directory"]["recurse"] is False  # keeps gitops/ out
    release = docs["helmrelease.yaml"]
    assert (ROOT / release["spec"]["chart"]["spec"]["chart"] / "Chart.yaml").is_file()
    assert release["spec"]["upgrade"]["crds"] == "CreateReplace"  # Helm alone never upgrades CRDs
    kustomization = docs["workloads-kustomization.yaml"]
    assert (ROOT / kustomization["spec"]["path"]).resolve() == (ROOT / "examples").resolve()
    assert "/examples/gitops/" in docs["gitrepository.yaml"]["spec"]["ignore"]
    # No ignoreDifferences: the operator writes nothing Git owns (see the spec-diff test below).
    assert "ignoreDifferences" not in app["spec"] and "ignoreDifferences" not in workloads["spec"]
    # The values they pass are valid for the chart (schema and templates).
    for values in (app["spec"]["source"]["helm"]["valuesObject"], release["spec"]["values"]):
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        assert by_kind(render(values_file=path, namespace="chatbot"), "StatefulSet")


def _apply_server_side(kube_cluster: Any, path: Path) -> str:
    return kube_cluster.kubectl(
        "apply", "--server-side", "--field-manager=phoenix-test", "-f", str(path)
    ).stdout


def _wait_established(kube_cluster: Any, paths: Sequence[Path]) -> list[str]:
    names = [crd["metadata"]["name"] for p in paths for crd in yaml.safe_load_all(p.read_text()) if crd]
    for path in paths:
        _apply_server_side(kube_cluster, path)
    kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in names])
    return names


@pytest.mark.integration
def test_gitops_objects_apply_against_the_real_argocd_and_flux_crds(
    kube_cluster: Any, kube_namespace: str
) -> None:
    """Server-side apply of every GitOps file against the real CRDs, as a server dry run.

    The API server runs the whole apply (schema with strict field validation, defaulting,
    admission) without storing: the Applications carry Argo CD's resources finalizer, which no
    Argo CD here would ever remove. Each object goes into the test's namespace instead of
    argocd / flux-system; its content is otherwise the file's.
    """
    crd_files = [
        p for name in ("argocd", "flux-source", "flux-helm", "flux-kustomize") for p in third_party_crds(name)
    ]
    crds = _wait_established(kube_cluster, crd_files)
    try:
        applied = []
        for path in GITOPS_FILES:
            doc = yaml.safe_load(path.read_text())
            doc["metadata"]["namespace"] = kube_namespace
            out = kube_cluster.kubectl(
                "apply",
                "--server-side",
                "--dry-run=server",
                "--field-manager=phoenix-test",
                "-f",
                "-",
                input=yaml.safe_dump(doc),
            ).stdout
            assert "serverside-applied (server dry run)" in out, out
            applied.append(f"{doc['apiVersion']}/{doc['kind']}")
        assert sorted(applied) == sorted(
            [
                "argoproj.io/v1alpha1/Application",
                "argoproj.io/v1alpha1/Application",
                "v1/ConfigMap",
                "helm.toolkit.fluxcd.io/v2/HelmRelease",
                "kustomize.toolkit.fluxcd.io/v1/Kustomization",
                "source.toolkit.fluxcd.io/v1/GitRepository",
                "source.toolkit.fluxcd.io/v1/HelmRepository",
            ]
        )
        # The validation is real: a misspelt field is refused by the Application CRD's schema.
        bad = yaml.safe_load((GITOPS / "argocd" / "application.yaml").read_text())
        bad["metadata"]["namespace"] = kube_namespace
        bad["spec"]["syncPolicy"]["automatedd"] = bad["spec"]["syncPolicy"].pop("automated")
        refused = kube_cluster.kubectl(
            "apply", "--server-side", "--dry-run=server", "-f", "-", input=yaml.safe_dump(bad), check=False
        )
        assert refused.returncode != 0 and "automatedd" in refused.stderr, refused.stderr
    finally:
        kube_cluster.kubectl("delete", "crd", "--ignore-not-found", "--timeout=60s", *crds, check=False)


# ------------------------------------------------------------------------------------------------
# helm install + the operator as the chart's ServiceAccount
# ------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_server_side_apply_of_a_new_object_needs_create(kube_cluster: Any, kube_namespace: str) -> None:
    """Why every child kind is granted `create` although the audit log only shows `patch`."""
    ns = kube_namespace
    kube_cluster.kubectl("create", "serviceaccount", "probe", "-n", ns)
    kube_cluster.kubectl("create", "role", "probe", "-n", ns, "--verb=get,patch", "--resource=configmaps")
    kube_cluster.kubectl(
        "create", "rolebinding", "probe", "-n", ns, "--role=probe", f"--serviceaccount={ns}:probe"
    )
    manifest = yaml.safe_dump(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}}
    )
    who = f"--as=system:serviceaccount:{ns}:probe"
    refused = kube_cluster.kubectl(
        "apply", "--server-side", who, "-n", ns, "-f", "-", input=manifest, check=False
    )
    assert refused.returncode != 0 and 'cannot create resource "configmaps"' in refused.stderr, refused.stderr
    kube_cluster.kubectl("create", "role", "probe-create", "-n", ns, "--verb=create", "--resource=configmaps")
    kube_cluster.kubectl(
        "create",
        "rolebinding",
        "probe-create",
        "-n",
        ns,
        "--role=probe-create",
        f"--serviceaccount={ns}:probe",
    )
    wait_for(
        lambda: (
            kube_cluster.kubectl(
                "apply", "--server-side", who, "-n", ns, "-f", "-", input=manifest, check=False
            ).returncode
            == 0
        ),
        timeout=30,
        description="server-side apply with create granted",
    )


@contextlib.contextmanager
def _session_operator_paused(config: pytest.Config) -> Iterator[None]:
    """Stop the suite's cluster-wide admin operator (if running) while the chart's one is tested.

    It would otherwise reconcile the same objects as an identity with every permission, and
    hide a missing grant (it would create what the chart's ServiceAccount then only patches).
    """
    from fixtures.operator import _RUNNER

    runner = config.stash.get(_RUNNER, None)
    running = runner is not None and runner.proc is not None
    if running:
        runner.stop()
    try:
        yield
    finally:
        if running:
            runner.start()


@dataclass
class Release:
    system: str
    watched: tuple[str, str]
    service_account: str
    install_output: str
    operators: list[ChartOperator]
    kubeconfig: Path
    prometheus: LocalPrometheus
    custom: client.CustomObjectsApi

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.system}:{self.service_account}"


def _install_monitoring_crds(kube_cluster: Any) -> list[str]:
    """The Prometheus Operator's CRDs, if absent; returns the names to delete afterwards."""
    files = third_party_crds("prometheus-operator")
    names = [crd["metadata"]["name"] for p in files for crd in yaml.safe_load_all(p.read_text()) if crd]
    present = kube_cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    missing = [n for n in names if f"customresourcedefinition.apiextensions.k8s.io/{n}" not in present]
    if missing:
        _wait_established(kube_cluster, files)
    return missing


@pytest.fixture(scope="module")
def release(
    request: pytest.FixtureRequest,
    kube_cluster: Any,
    milvus_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    work = tmp_path_factory.mktemp("chart")
    suffix = uuid.uuid4().hex[:6]
    system, watched = f"phx-system-{suffix}", (f"phx-a-{suffix}", f"phx-b-{suffix}")
    core = client.CoreV1Api(kube_cluster.api_client)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_session_operator_paused(request.config))
        monitoring_crds = _install_monitoring_crds(kube_cluster)
        stack.callback(
            lambda: (
                kube_cluster.kubectl("delete", "crd", "--ignore-not-found", *monitoring_crds, check=False)
                if monitoring_crds
                else None
            )
        )
        labels = {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
        for ns in (system, *watched):
            core.create_namespace(
                client.V1Namespace(
                    metadata=client.V1ObjectMeta(name=ns, labels=labels if ns == system else None)
                )
            )
            stack.callback(core.delete_namespace, ns)
        # Prometheus for the control loop: production.yaml's in-cluster URL and the breach test's.
        prometheus = LocalPrometheus([], workdir=work / "prometheus").start()
        stack.callback(prometheus.stop)
        values = {
            "watch": {"namespaces": list(watched)},
            "image": {"repository": "phoenix-operator", "tag": "test"},
            "operator": {
                "resyncSeconds": 2,
                "milvusTimeoutSeconds": 5,
                "endpointOverrides": {
                    "*.svc:19530": milvus_server.uri.split("://", 1)[-1],
                    "prometheus-operated.monitoring.svc:9090": prometheus.url.split("://", 1)[-1],
                },
            },
        }
        (work / "values.yaml").write_text(yaml.safe_dump(values))
        env = kube_cluster.env()
        # values.schema.json also guards `helm install`: nothing is created from a bad value.
        bad = helm(
            "install", "phx", str(CHART), "-n", system, "--set", "replicaCount=two", env=env, check=False
        )
        assert bad.returncode != 0 and "/replicaCount" in bad.stderr, bad.stderr
        installed = helm(
            "install",
            "phx",
            str(CHART),
            "-n",
            system,
            "--values",
            str(work / "values.yaml"),
            "--wait",
            "--timeout",
            "3m",
            env=env,
        )
        stack.callback(lambda: helm("uninstall", "phx", "-n", system, "--wait", env=env, check=False))
        statefulset = yaml.safe_load(
            kube_cluster.kubectl(
                "get", "statefulset", "-n", system, "phx-phoenix-operator", "-o", "yaml"
            ).stdout
        )
        kubeconfig = service_account_kubeconfig(
            kube_cluster, system, "phx-phoenix-operator", work / "sa.kubeconfig"
        )
        operators = [
            ChartOperator(statefulset, index, kubeconfig, work / f"operator-{index}.log") for index in (1, 0)
        ]
        for operator in operators:
            stack.callback(operator.stop)
            operator.start()
        # Both replicas announced in every watched namespace before any object exists, so the
        # stand-by has seen the active one (and paused) before there is anything to handle.
        for ns in watched:
            wait_for(
                lambda ns=ns: (
                    _peers(kube_cluster, ns) == {"phx-phoenix-operator-0": 0, "phx-phoenix-operator-1": 1}
                ),
                timeout=60,
                description=f"both replicas in the KopfPeering of {ns}",
            )
        # First thing on the way out, while the operators still run: delete the PhoenixDeployments,
        # whose Kopf finalizers only a running operator removes (else the namespaces hang).
        stack.callback(_delete_phoenix_deployments, kube_cluster, watched)
        yield Release(
            system=system,
            watched=watched,
            service_account="phx-phoenix-operator",
            install_output=installed.stdout,
            operators=operators,
            kubeconfig=kubeconfig,
            prometheus=prometheus,
            custom=client.CustomObjectsApi(kube_cluster.api_client),
        )


def _peers(kube_cluster: Any, namespace: str) -> dict[str, int]:
    """Identity -> priority of the live peers in the chart's KopfPeering."""
    out = kube_cluster.kubectl("get", "kopfpeering", "phoenix-operator", "-n", namespace, "-o", "json").stdout
    status = json.loads(out).get("status") or {}
    return {peer: int(info["priority"]) for peer, info in status.items() if info}


def _delete_phoenix_deployments(kube_cluster: Any, namespaces: Sequence[str]) -> None:
    for ns in namespaces:
        kube_cluster.kubectl("delete", "phx", "--all", "-n", ns, "--timeout=60s", check=False)


def _get(rel: Release, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = rel.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, name)
    return obj


def _condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def _wait_ready(rel: Release, ns: str, name: str, timeout: float = 150) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = _get(rel, ns, name)
        current = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and _condition(obj, "Ready").get("status") == "True" else None

    return wait_for(ready, timeout=timeout, interval=0.5, description=f"{ns}/{name} Ready=True")


def _owned_by_user(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What Git owns of a PhoenixDeployment: spec, labels, annotations (Kopf's own left out)."""
    meta = obj["metadata"]
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith(f"{API_GROUP}/")
    }
    return {
        "spec": obj["spec"],
        "labels": meta.get("labels") or {},
        "annotations": annotations,
        "generation": meta["generation"],
    }


@dataclass
class Scenario:
    ready: dict[str, dict[str, Any]]
    before_cycle: dict[str, Any]
    after_cycle: dict[str, Any]
    replicas_before: int
    replicas_after: int
    decision: dict[str, Any]
    spec_managers: set[str]
    monitoring_children: list[str]
    pruned: list[str]
    seconds: dict[str, float]


def _feed(state: TritonMetricsState, stop: threading.Event) -> None:
    """A 6 s TTFT (queueing-dominated), as test_control_loop's breach does."""
    while not stop.wait(0.1):
        for _ in range(3):
            state.record_request(
                request_s=6.0, queue_s=5.5, compute_s=0.5, priority_class="standard", ttft_s=6.0
            )
            state.record_batch(1)


@pytest.fixture(scope="module")
def scenario(kube_cluster: Any, release: Release) -> Scenario:
    """Everything the chart's ServiceAccount has to do, once: examples, a scaling cycle, a prune."""
    try:
        return _run_scenario(kube_cluster, release)
    except WaitTimeout as exc:
        active = release.operators[0]
        raise AssertionError(f"{exc}\n--- active operator log ---\n{active.log_tail(40)}") from exc


def _run_scenario(kube_cluster: Any, release: Release) -> Scenario:
    rel, seconds = release, {}
    ns_a, ns_b = rel.watched
    apps = client.AppsV1Api(kube_cluster.api_client)

    # 1. Every example, applied as a user would (with the token Secret it names), reaches Ready.
    start = time.time()
    names = []
    kube_cluster.kubectl(
        "create", "secret", "generic", "milvus-credentials", "-n", ns_a,
        f"--from-literal=token=phoenix:{uuid.uuid4().hex}",
    )  # fmt: skip
    for example in EXAMPLES:
        kube_cluster.kubectl("apply", "-n", ns_a, "-f", str(example))
        names += [
            d["metadata"]["name"]
            for d in yaml.safe_load_all(example.read_text())
            if d and d["kind"] == "PhoenixDeployment"
        ]
    ready = {name: _wait_ready(rel, ns_a, name) for name in names}
    seconds["examples_ready"] = time.time() - start
    monitoring_children = kube_cluster.kubectl(
        "get", "podmonitors,prometheusrules", "-n", ns_a, "-o", "name"
    ).stdout.split()

    # 2. A full control-loop cycle in auto mode that scales (Triton-compatible metrics, 6 s TTFT).
    name = "breach"
    state = TritonMetricsState(model="llama-chat")
    (port,) = pick_ports(1)
    server = TritonMetricsServer([state], port).start()
    stop = threading.Event()
    try:
        rel.prometheus.reload(
            [ScrapeTarget(f"127.0.0.1:{port}", {"phoenix_deployment": name, "namespace": ns_b})]
        )
        rel.prometheus.wait_for_targets_up()
        doc = copy.deepcopy(valid_doc(name))
        del doc["spec"]["retrieval"]
        doc["metadata"]["labels"] = {"team": "support"}
        doc["metadata"]["annotations"] = {"example.com/owner": "gitops"}
        doc["spec"]["autoscaling"] = {
            "mode": "auto",
            "minReplicas": 1,
            "maxReplicas": 6,
            "gpuBudget": 3,
            "prometheusUrl": rel.prometheus.url,
            "intervalSeconds": 5,
            "ttftP95TargetSeconds": 3,
        }
        kube_cluster.kubectl(
            "apply",
            "--server-side",
            "--field-manager=gitops",
            "-n",
            ns_b,
            "-f",
            "-",
            input=yaml.safe_dump(doc),
        )
        before = _owned_by_user(_wait_ready(rel, ns_b, name))
        replicas_before = apps.read_namespaced_deployment(f"{name}-triton", ns_b).spec.replicas
        start = time.time()
        threading.Thread(target=_feed, args=(state, stop), daemon=True).start()

        def scaled() -> dict[str, Any] | None:
            obj = _get(rel, ns_b, name)
            decisions = (obj.get("status") or {}).get("decisions") or []
            applied = [d for d in decisions if d["action"] == "scale-up" and d["applied"]]
            deployment = apps.read_namespaced_deployment(f"{name}-triton", ns_b)
            return obj if applied and deployment.spec.replicas > replicas_before else None

        after_obj = wait_for(scaled, timeout=150, interval=1.0, description="a scale-up decision applied")
        seconds["control_loop_cycle"] = time.time() - start
    finally:
        stop.set()
        server.stop()
    decision = [d for d in after_obj["status"]["decisions"] if d["action"] == "scale-up"][-1]
    spec_managers = {
        entry["manager"]
        for entry in after_obj["metadata"].get("managedFields") or []
        if entry.get("subresource") != "status" and '"f:spec"' in json.dumps(entry.get("fieldsV1", {}))
    }

    # 3. The spec stops asking for retrieval and alerts: the operator prunes those children.
    start = time.time()
    patch = [
        {"op": "remove", "path": "/spec/retrieval"},
        {"op": "add", "path": "/spec/monitoring/prometheusRule", "value": False},
    ]
    kube_cluster.kubectl("patch", "phx", "chat-prod", "-n", ns_a, "--type=json", "-p", json.dumps(patch))
    gone = [
        "statefulset/chat-prod-milvus",
        "service/chat-prod-milvus",
        "cronjob/chat-prod-kb-refresh",
        "prometheusrule/chat-prod-alerts",
    ]
    wait_for(
        lambda: (
            kube_cluster.kubectl("get", *gone, "-n", ns_a, "--ignore-not-found", "-o", "name").stdout.strip()
            == ""
        ),
        timeout=90,
        interval=0.5,
        description="children pruned",
    )
    seconds["prune"] = time.time() - start
    return Scenario(
        ready=ready,
        before_cycle=before,
        after_cycle=_owned_by_user(after_obj),
        replicas_before=replicas_before,
        replicas_after=apps.read_namespaced_deployment(f"{name}-triton", ns_b).spec.replicas,
        decision=decision,
        spec_managers=spec_managers,
        monitoring_children=monitoring_children,
        pruned=gone,
        seconds=seconds,
    )


@pytest.mark.integration
def test_helm_install_into_a_restricted_namespace(kube_cluster: Any, release: Release) -> None:
    ns = release.system
    kinds = kube_cluster.kubectl(
        "get", "servicemonitor,prometheusrule,statefulset,service,poddisruptionbudget", "-n", ns, "-o", "name"
    ).stdout.split()
    assert sorted(kinds) == sorted(
        [
            "servicemonitor.monitoring.coreos.com/phx-phoenix-operator",
            "prometheusrule.monitoring.coreos.com/phx-phoenix-operator",
            "statefulset.apps/phx-phoenix-operator",
            "service/phx-phoenix-operator-metrics",
            "poddisruptionbudget.policy/phx-phoenix-operator",
        ]
    )
    # --wait returned, so the pods were admitted under Pod Security "restricted" (kwok runs them).
    sts = client.AppsV1Api(kube_cluster.api_client).read_namespaced_stateful_set("phx-phoenix-operator", ns)
    assert sts.status.ready_replicas == 2
    for watched in release.watched:
        assert (
            kube_cluster.kubectl(
                "get", "kopfpeering", "phoenix-operator", "-n", watched, "-o", "name"
            ).returncode
            == 0
        )
    assert "STATUS: deployed" in release.install_output


@pytest.mark.integration
def test_every_example_reaches_ready_as_the_chart_service_account(scenario: Scenario) -> None:
    assert sorted(scenario.ready) == ["chat-external", "chat-minimal", "chat-prod"]
    for name, obj in scenario.ready.items():
        assert _condition(obj, "Ready")["reason"] == "AllReady", name
        assert argocd_health(obj)["status"] == "Healthy", name
    # With the Prometheus Operator's API served, the optional children were created too.
    assert "prometheusrule.monitoring.coreos.com/chat-prod-alerts" in scenario.monitoring_children
    assert "podmonitor.monitoring.coreos.com/chat-prod-triton" in scenario.monitoring_children


@pytest.mark.integration
def test_operator_never_writes_a_phoenixdeployment_spec(scenario: Scenario) -> None:
    """A control-loop cycle that scaled (observe, decide, act, explain) left Git's fields alone."""
    assert scenario.decision["applied"] is True and scenario.decision["mode"] == "auto"
    assert scenario.replicas_after > scenario.replicas_before
    assert scenario.after_cycle == scenario.before_cycle
    # Nobody but the applier ever owned a spec field (status and Kopf's metadata are elsewhere).
    assert scenario.spec_managers == {"gitops"}


@pytest.mark.integration
def test_only_the_highest_priority_replica_acts(
    kube_cluster: Any, release: Release, scenario: Scenario
) -> None:
    active, standby = release.operators
    assert active.index == 1 and standby.index == 0
    assert "Handler 'on_change' succeeded" in active.log()
    assert not re.search(r"kopf\.objects", standby.log()), standby.log_tail()
    for ns in release.watched:
        assert _peers(kube_cluster, ns) == {"phx-phoenix-operator-1": 1, "phx-phoenix-operator-0": 0}


@pytest.mark.integration
def test_operator_makes_no_forbidden_call(release: Release, scenario: Scenario) -> None:
    for operator in release.operators:
        log = operator.log()
        assert "Handler" in log or operator.index == 0
        bad = [
            line
            for line in log.splitlines()
            # Not a timestamp's milliseconds ("08:03:50,403").
            if re.search(r"(?<![,.\d])\b403\b|[Ff]orbidden|Not enough permissions", line)
        ]
        assert not bad, "\n".join(bad[:5])


@pytest.mark.integration
def test_reads_the_scenario_may_not_reach_work_as_the_service_account(
    release: Release, scenario: Scenario
) -> None:
    """The batching actuator's endpoint lookup runs only on a batching decision; call it directly."""
    from kubernetes import config as kube_config

    from phoenix_operator.clients.kube import Kube
    from phoenix_operator.clients.triton import ready_endpoints

    api = kube_config.new_client_from_config(config_file=str(release.kubeconfig))
    try:
        kube = Kube(api)
        endpoints = wait_for(
            lambda: ready_endpoints(kube, "breach-triton", release.watched[1], lambda a: a),
            timeout=30,
            description="ready Triton endpoints, read as the ServiceAccount",
        )
        assert all(e.endswith(f":{HTTP_PORT}") for e in endpoints), endpoints
        token = kube.secret_data("milvus-credentials", release.watched[0]) or {}
        assert set(token) == {"token"} and token["token"].startswith("phoenix:")
        # The Secrets it generated itself: read back by name (the control loop's Triton key).
        control = kube.secret_data("chat-prod-triton-control", release.watched[0]) or {}
        assert len(control.get("key", "")) >= 40
    finally:
        api.close()


#: Granted writes the scenario cannot show in the audit log, and why.
UNOBSERVED_WRITES = {
    # Server-side apply is logged as `patch` even when it creates; the API server authorises the
    # creation as `create` (test_server_side_apply_of_a_new_object_needs_create).
    **{
        (g, r, "create"): "authorised inside server-side apply"
        for (g, r), v in AUDITED.items()
        if v >= CHILD_VERBS
    },
    (("milvus.io", "milvuses", "patch")): "no Milvus Operator in the local cluster",
    (("milvus.io", "milvuses", "delete")): "no Milvus Operator in the local cluster",
    # Always rendered, so never pruned while a PhoenixDeployment exists (GC removes them after).
    ("", "configmaps", "delete"): "always rendered",
    ("apps", "deployments", "delete"): "always rendered",
    ("policy", "poddisruptionbudgets", "delete"): "always rendered",
    ("monitoring.coreos.com", "podmonitors", "delete"): "always rendered with the Prometheus Operator",
}


@pytest.mark.integration
def test_writes_in_the_audit_log_are_exactly_the_granted_ones(
    kube_cluster: Any, release: Release, scenario: Scenario
) -> None:
    seen: dict[tuple[str, str, str], int] = {}
    failures = []
    for line in kube_cluster.local.audit_log.read_text().splitlines():
        entry = json.loads(line)
        if entry["user"]["username"] != release.user:
            continue
        ref = entry.get("objectRef") or {}
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        key = (ref.get("apiGroup", ""), resource, entry["verb"])
        seen[key] = seen.get(key, 0) + 1
        code = (entry.get("responseStatus") or {}).get("code", 0)
        if code >= 400 and code != 404 and code != 409:
            failures.append(f"{entry['verb']} {resource} {ref.get('name')}: {code}")
    assert not failures, failures
    granted = {(g, r, v) for g, r, v, _ in audited_grants() if v in {"create", "patch", "delete", "update"}}
    assert set(seen) <= granted, set(seen) - granted
    assert granted - set(seen) == set(UNOBSERVED_WRITES), sorted(granted - set(seen) - set(UNOBSERVED_WRITES))


def _can_i_list(kube_cluster: Any, user: str, namespace: str) -> tuple[set[Grant], list[str]]:
    """`kubectl auth can-i --list` as ``user``: (resource grants, non-resource URL rows)."""
    out = kube_cluster.kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace).stdout
    lines = out.splitlines()
    header = lines[0]
    cols = [header.index(c) for c in ("Non-Resource URLs", "Resource Names", "Verbs")]
    grants: set[Grant] = set()
    urls = []
    for line in lines[1:]:
        resource = line[: cols[0]].strip()
        names = line[cols[1] : cols[2]].strip().strip("[]").split()
        verbs = line[cols[2] :].strip().strip("[]").split()
        if not resource:
            urls.append(line[cols[0] : cols[1]].strip())
            continue
        base, _, sub = resource.partition("/")
        plural, _, group = base.partition(".")
        for verb in verbs:
            for name in names or [""]:
                grants.add((group, plural + (f"/{sub}" if sub else ""), verb, name))
    return grants, urls


@pytest.mark.integration
def test_service_account_can_do_exactly_the_audited_set(kube_cluster: Any, release: Release) -> None:
    for ns in release.watched:
        grants, _ = _can_i_list(kube_cluster, release.user, ns)
        assert grants - BUILTIN == audited_grants("kopfpeerings"), ns
    # Nothing in the operator's own namespace, or any other, nor cluster-wide.
    for ns in (release.system, "default", "kube-system"):
        grants, urls = _can_i_list(kube_cluster, release.user, ns)
        assert grants == BUILTIN, (ns, grants - BUILTIN)
        assert all(u.startswith("[/") for u in urls)
    denied = [
        ("list", "secrets", release.watched[0]),
        ("watch", "secrets", release.watched[0]),
        ("create", "pods", release.watched[0]),
        ("list", "namespaces", ""),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", ""),
        ("get", "nodes", ""),
        ("update", "deployments.apps", release.watched[0]),
        ("patch", "kopfpeerings.kopf.dev/someone-else", release.watched[0]),
    ]
    for verb, resource, ns in denied:
        args = ["auth", "can-i", verb, resource, f"--as={release.user}"] + (["-n", ns] if ns else [])
        assert kube_cluster.kubectl(*args, check=False).stdout.strip() == "no", (verb, resource)
