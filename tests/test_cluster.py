"""The local cluster: pure parts (unit) and its acceptance against the real cluster."""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from fixtures.cluster import KubeCluster
from phoenix_operator.cluster import build
from phoenix_operator.cluster.cli import cluster as cluster_cli
from phoenix_operator.cluster.local import (
    LocalCluster,
    ProcessRecord,
    process_alive,
    stop_process_groups,
    tail,
)
from phoenix_operator.cluster.manifests import (
    GPU_RESOURCE,
    NodeSpec,
    instance_type,
    render_kubeconfig,
    render_kwok_config,
    render_node,
    render_nodes,
)
from phoenix_operator.cluster.ports import pick_ports, port_is_free, port_is_listening
from phoenix_operator.cluster.waiting import WaitTimeout, wait_for

# --------------------------------------------------------------------------- unit: ports


def test_pick_ports_distinct_free_and_outside_ephemeral_range() -> None:
    ports = pick_ports(6, rng=random.Random(7))
    assert len(set(ports)) == 6
    assert all(20000 <= p <= 32767 for p in ports)
    assert all(port_is_free(p) for p in ports)


def test_pick_ports_skips_busy_and_avoided_ports() -> None:
    busy = {20000, 20001}
    ports = pick_ports(
        2, port_range=(20000, 20004), avoid={20002}, rng=random.Random(1), is_free=lambda p: p not in busy
    )
    assert sorted(ports) == [20003, 20004]
    with pytest.raises(RuntimeError, match="free ports"):
        pick_ports(3, port_range=(20000, 20004), avoid={20002}, is_free=lambda p: p not in busy)


def test_port_is_listening_sees_a_server() -> None:
    import socket

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert port_is_listening(port)
        assert not port_is_free(port)
    assert not port_is_listening(port)


# --------------------------------------------------------------------------- unit: manifests


def test_default_node_looks_like_a_p5_gpu_node() -> None:
    node = render_node(NodeSpec(), 0)
    meta, status = node["metadata"], node["status"]
    assert meta["name"] == "gpu-node-0"
    assert meta["annotations"]["kwok.x-k8s.io/node"] == "fake"
    labels = meta["labels"]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.count"] == "8"
    assert labels["node.kubernetes.io/instance-type"] == "p5.48xlarge"
    assert labels["kubernetes.io/hostname"] == "gpu-node-0"
    assert labels["type"] == "kwok"
    assert node["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert status["capacity"][GPU_RESOURCE] == "8"
    assert status["allocatable"][GPU_RESOURCE] == "8"
    assert status["capacity"]["cpu"] == "192"
    assert status["capacity"]["pods"] == "110"


def test_node_options_and_unknown_products() -> None:
    spec = NodeSpec(count=3, gpus_per_node=2, gpu_product="NVIDIA-L4", cpu_nodes=0)
    nodes = render_nodes(spec)
    assert (
        [n["metadata"]["name"] for n in nodes] == spec.names() == ["gpu-node-0", "gpu-node-1", "gpu-node-2"]
    )
    assert {n["status"]["capacity"][GPU_RESOURCE] for n in nodes} == {"2"}
    assert nodes[0]["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "local.l4-x2"
    ips = {n["status"]["addresses"][0]["address"] for n in nodes}
    assert len(ips) == 3
    assert instance_type("ACME-Z9", 8) == "local.acme-x8"
    # Label values must be valid Kubernetes label values (strings, <= 63 chars).
    for value in render_node(NodeSpec(gpu_product="ACME-Z9"), 0)["metadata"]["labels"].values():
        assert isinstance(value, str)
        assert len(value) <= 63


def test_cpu_nodes_are_untainted_and_gpu_free() -> None:
    spec = NodeSpec(count=1, cpu_nodes=2)
    nodes = render_nodes(spec)
    assert (
        [n["metadata"]["name"] for n in nodes] == ["gpu-node-0", "cpu-node-0", "cpu-node-1"] == spec.names()
    )
    cpu = nodes[1]
    assert "taints" not in cpu["spec"]
    assert GPU_RESOURCE not in cpu["status"]["capacity"]
    assert cpu["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "m6i.8xlarge"
    assert cpu["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert cpu["status"]["addresses"][0]["address"] != nodes[2]["status"]["addresses"][0]["address"]


def test_kubeconfig_is_self_contained() -> None:
    text = render_kubeconfig(
        server="https://127.0.0.1:24000", ca_pem=b"CA", cert_pem=b"CERT", key_pem=b"KEY", user="phoenix-admin"
    )
    doc = yaml.safe_load(text)
    assert doc["current-context"] == "phoenix-admin@phoenix-local"
    cluster = doc["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:24000"
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"CA"
    user = doc["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == b"CERT"
    assert base64.b64decode(user["client-key-data"]) == b"KEY"


def test_kwok_config_has_options_and_default_stages() -> None:
    docs = list(yaml.safe_load_all(render_kwok_config(pod_cidr="10.9.0.0/16")))
    assert docs[0]["kind"] == "KwokConfiguration"
    assert docs[0]["options"]["cidr"] == "10.9.0.0/16"
    stages = {d["metadata"]["name"] for d in docs[1:] if d["kind"] == "Stage"}
    assert {"node-initialize", "node-heartbeat-with-lease", "pod-ready", "pod-delete"} <= stages


# --------------------------------------------------------------------------- unit: helpers


def test_wait_for_returns_value_and_times_out_with_last_seen() -> None:
    calls = iter([None, 0, "ok"])
    assert wait_for(lambda: next(calls), timeout=5, interval=0.001) == "ok"

    def boom() -> bool:
        raise ConnectionError("refused")

    with pytest.raises(WaitTimeout, match="refused"):
        wait_for(boom, timeout=0.05, interval=0.01, description="boom")


def test_tail_reads_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(log, 2) == "line 98\nline 99"
    assert tail(tmp_path / "missing.log") == ""


def test_stop_process_groups_kills_group_and_survives_pid_reuse() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    stat = Path(f"/proc/{proc.pid}/stat").read_text()
    ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    assert process_alive(proc.pid, ticks)
    assert not process_alive(proc.pid, ticks + 1)  # a different start time means another process
    started = time.monotonic()
    # SIGTERM is ignored: only the SIGKILL after the grace period ends it.
    stop_process_groups([ProcessRecord("sleeper", proc.pid, ticks, "")], grace=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert not process_alive(proc.pid, ticks)
    assert not Path(f"/proc/{proc.pid}").exists()  # reaped, not left a zombie
    proc.stdout.close()


def test_build_cache_layout_and_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build.tool_bin_dir("kubernetes") == tmp_path / "phoenix-operator/tools/kubernetes-v1.34.4/bin"
    assert build.binary_path("kubectl").name == "kubectl"
    assert build.binary_path("helm").parent == build.tool_bin_dir("helm")
    assert not build.is_built("etcd")
    fp = build.fingerprint(build.TOOLS["etcd"])
    assert fp == build.fingerprint(build.TOOLS["etcd"]) and len(fp) == 16
    for tool in build.TOOLS:
        gomod = Path(build.__file__).parent / "gomod" / tool
        assert (
            (gomod / "go.mod").is_file() and (gomod / "go.sum").is_file() and (gomod / "tools.go").is_file()
        )


def test_missing_go_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("PHOENIX_GO", raising=False)
    monkeypatch.setattr(build.os, "access", lambda path, mode: False)
    with pytest.raises(build.BuildError, match="Go is not installed") as info:
        build.find_go()
    assert "\n" not in str(info.value)


def test_env_prints_exports_for_kubeconfig_and_tools(tmp_path: Path) -> None:
    result = CliRunner().invoke(cluster_cli, ["env", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"export KUBECONFIG={tmp_path / 'none' / 'admin.kubeconfig'}"
    assert lines[1].startswith("export PATH=") and lines[1].endswith(":$PATH")
    assert str(build.tool_bin_dir("kubernetes")) in lines[1]
    assert str(build.tool_bin_dir("helm")) in lines[1]


def test_down_refuses_to_delete_a_foreign_folder(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    assert LocalCluster(tmp_path).down() is False
    assert precious.exists()


# --------------------------------------------------------------------------- integration helpers


def _gpu_deployment(name: str, gpus: int, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [
                        {
                            "name": "triton",
                            "image": "nvcr.io/nvidia/tritonserver:24.08-py3",
                            "resources": {
                                "requests": {"cpu": "1", "memory": "1Gi", GPU_RESOURCE: str(gpus)},
                                "limits": {GPU_RESOURCE: str(gpus)},
                            },
                        }
                    ],
                },
            },
        },
    }


def _pods(kube: KubeCluster, namespace: str, selector: str) -> list[Any]:
    from kubernetes import client

    return list(
        client.CoreV1Api(kube.api_client).list_namespaced_pod(namespace, label_selector=selector).items
    )


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _gone(read: Any) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


# --------------------------------------------------------------------------- integration


@pytest.mark.integration
def test_nodes_list_gpu_capacity(kube_cluster: KubeCluster) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube_cluster.api_client)
    nodes = core.list_node(label_selector="nvidia.com/gpu.present=true").items
    assert sorted(n.metadata.name for n in nodes) == [f"gpu-node-{i}" for i in range(4)]
    for node in nodes:
        assert node.status.capacity[GPU_RESOURCE] == "8"
        assert node.status.allocatable[GPU_RESOURCE] == "8"
        assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
        assert [(t.key, t.effect) for t in node.spec.taints] == [("nvidia.com/gpu", "NoSchedule")]
    (cpu_node,) = core.list_node(label_selector="!nvidia.com/gpu.present").items
    assert cpu_node.metadata.name == "cpu-node-0" and not cpu_node.spec.taints
    # ... and as a user sees it with the cached kubectl.
    out = kube_cluster.kubectl(
        "get",
        "nodes",
        "-l",
        "nvidia.com/gpu.present=true",
        "-o",
        "custom-columns=NAME:.metadata.name,GPU:.status.capacity.nvidia\\.com/gpu",
    ).stdout
    assert out.split()[:4] == ["NAME", "GPU", "gpu-node-0", "8"]


@pytest.mark.integration
def test_gpu_deployment_gets_running_ready_pods(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    from kubernetes import client

    apps = client.AppsV1Api(kube_cluster.api_client)
    apps.create_namespaced_deployment(kube_namespace, _gpu_deployment("triton", gpus=1, replicas=2))
    wait_for(
        lambda: (
            (apps.read_namespaced_deployment_status("triton", kube_namespace).status.ready_replicas or 0) == 2
        ),
        timeout=60,
        description="2 ready replicas",
    )
    pods = _pods(kube_cluster, kube_namespace, "app=triton")
    assert len(pods) == 2
    for pod in pods:
        assert pod.status.phase == "Running"
        assert _ready(pod)
        assert pod.spec.node_name.startswith("gpu-node-")
        assert pod.status.pod_ip  # kwok hands out pod IPs from its CIDR
        # Admission really ran: ServiceAccount plugin mounted the projected token volume,
        # DefaultTolerationSeconds added the not-ready/unreachable tolerations.
        assert pod.spec.service_account_name == "default"
        assert any(v.projected is not None for v in pod.spec.volumes)
        assert {t.key for t in pod.spec.tolerations} >= {"node.kubernetes.io/not-ready", "nvidia.com/gpu"}


@pytest.mark.integration
def test_too_many_gpus_stays_pending_with_failed_scheduling(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    from kubernetes import client

    client.AppsV1Api(kube_cluster.api_client).create_namespaced_deployment(
        kube_namespace, _gpu_deployment("greedy", gpus=9)
    )
    core = client.CoreV1Api(kube_cluster.api_client)
    pod = wait_for(lambda: next(iter(_pods(kube_cluster, kube_namespace, "app=greedy")), None), timeout=30,
                   description="the greedy pod to exist")  # fmt: skip
    event = wait_for(
        lambda: next(
            (
                e
                for e in core.list_namespaced_event(
                    kube_namespace, field_selector=f"involvedObject.name={pod.metadata.name}"
                ).items
                if e.reason == "FailedScheduling"
            ),
            None,
        ),
        timeout=30,
        description="a FailedScheduling event",
    )
    assert "Insufficient nvidia.com/gpu" in event.message
    pod = core.read_namespaced_pod(pod.metadata.name, kube_namespace)
    assert pod.status.phase == "Pending"
    assert not pod.spec.node_name


@pytest.mark.integration
def test_deleting_an_owner_garbage_collects_dependents(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube_cluster.api_client)
    apps = client.AppsV1Api(kube_cluster.api_client)
    owner = core.create_namespaced_config_map(
        kube_namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"a": "1"})
    )
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    core.create_namespaced_config_map(
        kube_namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="dependent", owner_references=[ref]), data={"b": "2"}
        ),
    )
    core.delete_namespaced_config_map("owner", kube_namespace)
    wait_for(lambda: _gone(lambda: core.read_namespaced_config_map("dependent", kube_namespace)), timeout=30,
             description="the dependent ConfigMap to be garbage-collected")  # fmt: skip

    # A Deployment's ReplicaSet and pods go with it (the controllers set their ownerReferences).
    apps.create_namespaced_deployment(kube_namespace, _gpu_deployment("gc", gpus=1))
    wait_for(lambda: any(_ready(p) for p in _pods(kube_cluster, kube_namespace, "app=gc")), timeout=60,
             description="the gc pod to be Ready")  # fmt: skip
    rs = apps.list_namespaced_replica_set(kube_namespace, label_selector="app=gc").items
    assert rs and rs[0].metadata.owner_references[0].kind == "Deployment"
    apps.delete_namespaced_deployment("gc", kube_namespace, propagation_policy="Background")
    wait_for(
        lambda: (
            not apps.list_namespaced_replica_set(kube_namespace, label_selector="app=gc").items
            and not _pods(kube_cluster, kube_namespace, "app=gc")
        ),
        timeout=60,
        description="ReplicaSet and pods of the deleted Deployment to be gone",
    )


@pytest.mark.integration
def test_server_side_apply_with_kubectl_and_python(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    from kubernetes import client, dynamic
    from kubernetes.client.exceptions import ApiException

    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ssa", "namespace": kube_namespace},
        "data": {"model": "llama-2-7b", "max_batch_size": "8"},
    }
    kube_cluster.kubectl(
        "apply", "--server-side", "--field-manager=phoenix-user", "-f", "-", input=yaml.safe_dump(manifest)
    )
    core = client.CoreV1Api(kube_cluster.api_client)
    cm = core.read_namespaced_config_map("ssa", kube_namespace)
    assert cm.data == {"model": "llama-2-7b", "max_batch_size": "8"}
    assert [(m.manager, m.operation) for m in cm.metadata.managed_fields] == [("phoenix-user", "Apply")]

    dyn = dynamic.DynamicClient(kube_cluster.api_client)
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    conflicting = {**manifest, "data": {"max_batch_size": "16"}}
    with pytest.raises(ApiException) as info:
        dyn.server_side_apply(configmaps, body=conflicting, field_manager="phoenix-operator")
    assert info.value.status == 409  # the field belongs to another manager: a real SSA conflict
    dyn.server_side_apply(
        configmaps, body=conflicting, field_manager="phoenix-operator", force_conflicts=True
    )
    cm = core.read_namespaced_config_map("ssa", kube_namespace)
    assert cm.data == {"model": "llama-2-7b", "max_batch_size": "16"}
    assert {m.manager for m in cm.metadata.managed_fields} == {"phoenix-user", "phoenix-operator"}

    # kubectl's view of the same object, as a user checks it.
    out = kube_cluster.kubectl(
        "get", "configmap", "ssa", "-n", kube_namespace, "-o", "jsonpath={.data.max_batch_size}"
    )
    assert out.stdout == "16"


@pytest.mark.integration
def test_second_up_is_idempotent(kube_cluster: KubeCluster) -> None:
    before = [(c.name, c.pid) for c in kube_cluster.local.status()]
    result = kube_cluster.local.up()
    assert result.already_running
    assert [(c.name, c.pid) for c in kube_cluster.local.status()] == before
    assert kube_cluster.local.is_running()


@pytest.mark.integration
def test_cli_up_status_env_down_leaves_nothing_behind(tmp_path: Path) -> None:
    """The user's path end to end, on a second small cluster (the session one stays up)."""
    state = tmp_path / "cli-cluster"
    runner = CliRunner()
    args = ["--state-dir", str(state)]
    try:
        started = time.monotonic()
        result = runner.invoke(
            cluster_cli, ["up", "--nodes", "1", "--cpu-nodes", "0", "--gpus-per-node", "2", *args]
        )
        up_seconds = time.monotonic() - started
        assert result.exit_code == 0, result.output
        assert f"export KUBECONFIG={state / 'admin.kubeconfig'}" in result.stdout
        assert "cluster ready in" in result.stderr
        print(f"cached `phoenix cluster up` took {up_seconds:.1f}s")

        again = runner.invoke(cluster_cli, ["up", "--nodes", "1", *args])
        assert again.exit_code == 0 and "already running" in again.stderr

        status = runner.invoke(cluster_cli, ["status", *args])
        assert status.exit_code == 0, status.output
        assert "kube-apiserver" in status.stdout and "ready" in status.stdout

        env_out = runner.invoke(cluster_cli, ["env", *args]).stdout
        env = dict(os.environ)
        env.update({"KUBECONFIG": str(state / "admin.kubeconfig")})
        env["PATH"] = f"{build.tool_bin_dir('kubernetes')}:{env['PATH']}"
        assert f"KUBECONFIG={state / 'admin.kubeconfig'}" in env_out
        nodes = subprocess.run(["kubectl", "get", "nodes", "-o", "name"], env=env, capture_output=True,
                               text=True, check=True, timeout=60).stdout  # fmt: skip
        assert nodes.split() == ["node/gpu-node-0"]

        local = LocalCluster(state)
        pids = [(c.pid, c.name) for c in local.status()]
        ports = list(local.ports.values())
        assert len(pids) == 5 and all(port_is_listening(p) for p in (local.ports["apiserver"],))
    finally:
        down = runner.invoke(cluster_cli, ["down", *args])
    assert down.exit_code == 0, down.output
    assert not state.exists()
    assert [name for pid, name in pids if Path(f"/proc/{pid}").exists()] == []
    assert [p for p in ports if port_is_listening(p)] == []
    assert all(port_is_free(p) for p in ports)


@pytest.mark.integration
def test_helm_installs_a_chart_and_waits_for_it(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    """The cached helm talks to the cluster; non-GPU pods land on the untainted CPU node."""
    helm = [str(kube_cluster.helm_path)]
    env = {
        **kube_cluster.env(),
        "HELM_CACHE_HOME": str(tmp_path / "hc"),
        "HELM_CONFIG_HOME": str(tmp_path / "hcfg"),
    }
    subprocess.run(
        [*helm, "create", str(tmp_path / "web")], env=env, check=True, capture_output=True, timeout=60
    )
    subprocess.run(
        [*helm, "install", "web", str(tmp_path / "web"), "-n", kube_namespace, "--wait", "--timeout", "60s"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    (pod,) = _pods(kube_cluster, kube_namespace, "app.kubernetes.io/instance=web")
    assert _ready(pod) and pod.spec.node_name == "cpu-node-0"
    listed = subprocess.run([*helm, "list", "-n", kube_namespace, "-q"], env=env, check=True,
                            capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    assert listed.split() == ["web"]


@pytest.mark.integration
def test_rbac_and_service_account_tokens_are_enforced(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    """A ServiceAccount token authenticates, and RBAC (not 'everyone is admin') decides what it may do."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(kube_cluster.api_client)
    rbac = client.RbacAuthorizationV1Api(kube_cluster.api_client)
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= {
        ns.metadata.name for ns in core.list_namespace().items
    }
    # The root-CA publisher (controller-manager) gives every namespace the CA for projected volumes.
    wait_for(lambda: core.read_namespaced_config_map("kube-root-ca.crt", kube_namespace), timeout=30,
             description="kube-root-ca.crt in the test namespace")  # fmt: skip

    core.create_namespaced_service_account(
        kube_namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="robot"))
    )
    token = core.create_namespaced_service_account_token(
        "robot",
        kube_namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    ).status.token
    cfg = client.Configuration()
    cfg.host = kube_cluster.local.server
    cfg.ssl_ca_cert = str(kube_cluster.local.pki.ca_cert)
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    with client.ApiClient(cfg) as robot_client:
        robot = client.CoreV1Api(robot_client)
        with pytest.raises(ApiException) as denied:
            robot.list_namespaced_pod(kube_namespace)
        assert denied.value.status == 403
        assert f"system:serviceaccount:{kube_namespace}:robot" in str(denied.value.body)

        rbac.create_namespaced_role(
            kube_namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="pod-reader"),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])],
            ),
        )
        rbac.create_namespaced_role_binding(
            kube_namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="robot-reads-pods"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"
                ),
                subjects=[
                    client.RbacV1Subject(kind="ServiceAccount", name="robot", namespace=kube_namespace)
                ],
            ),
        )
        wait_for(lambda: robot.list_namespaced_pod(kube_namespace) is not None, timeout=30,
                 description="the RoleBinding to take effect")  # fmt: skip
        with pytest.raises(ApiException) as still_denied:
            robot.list_namespaced_pod("kube-system")
        assert still_denied.value.status == 403
