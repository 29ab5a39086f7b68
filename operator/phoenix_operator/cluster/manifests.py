"""Pure renderers for the local cluster: fake GPU nodes, kubeconfigs, kwok's configuration.

Kept free of I/O so they can be unit-tested and reused (the demo and the operator's tests
render the same nodes a user sees after ``phoenix cluster up``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

#: Annotation kwok is told to manage (``--manage-nodes-with-annotation-selector``); nodes
#: without it (e.g. a real kubelet joining by mistake) are left alone.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE = "fake"

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = "present"


@dataclass(frozen=True)
class GpuProduct:
    """What a cloud GPU node of one product looks like (per GPU, and its 8-GPU instance type)."""

    family: str
    memory_mib: int
    instance_type_8: str
    cpu_per_gpu: int
    memory_gib_per_gpu: int


#: The values NVIDIA's GPU feature discovery and the clouds publish for common products.
GPU_PRODUCTS: dict[str, GpuProduct] = {
    "NVIDIA-H100-80GB-HBM3": GpuProduct("hopper", 81559, "p5.48xlarge", 24, 256),
    "NVIDIA-H200": GpuProduct("hopper", 143771, "p5e.48xlarge", 24, 256),
    "NVIDIA-A100-SXM4-80GB": GpuProduct("ampere", 81920, "p4de.24xlarge", 12, 144),
    "NVIDIA-A100-SXM4-40GB": GpuProduct("ampere", 40960, "p4d.24xlarge", 12, 144),
    "NVIDIA-L4": GpuProduct("ada-lovelace", 23034, "g6.48xlarge", 24, 96),
    "NVIDIA-A10G": GpuProduct("ampere", 23028, "g5.48xlarge", 24, 96),
}
_UNKNOWN_PRODUCT = GpuProduct("unknown", 16384, "", 16, 128)


@dataclass(frozen=True)
class NodeSpec:
    """Shape of the fake nodes ``up`` registers: GPU nodes, plus untainted CPU nodes.

    The CPU nodes are where a real GPU cluster runs everything that is not a GPU workload
    (vector database, Prometheus, the operator itself); without one, such pods stay Pending
    behind the GPU taint.
    """

    count: int = 4
    gpus_per_node: int = 8
    gpu_product: str = "NVIDIA-H100-80GB-HBM3"
    cpu_nodes: int = 1
    name_prefix: str = "gpu-node"
    cpu_name_prefix: str = "cpu-node"
    pods_per_node: int = 110

    def gpu_names(self) -> list[str]:
        return [f"{self.name_prefix}-{i}" for i in range(self.count)]

    def cpu_names(self) -> list[str]:
        return [f"{self.cpu_name_prefix}-{i}" for i in range(self.cpu_nodes)]

    def names(self) -> list[str]:
        return self.gpu_names() + self.cpu_names()


#: The CPU node pool's shape (an m6i.8xlarge: 32 vCPU, 128 GiB).
CPU_NODE_INSTANCE_TYPE = "m6i.8xlarge"
CPU_NODE_CPUS = 32
CPU_NODE_MEMORY_GIB = 128


def instance_type(product: str, gpus: int) -> str:
    """Cloud instance type for *gpus* GPUs of *product* (the 8-GPU type when it matches)."""
    info = GPU_PRODUCTS.get(product, _UNKNOWN_PRODUCT)
    if info.instance_type_8 and gpus == 8:
        return info.instance_type_8
    short = product.removeprefix("NVIDIA-").split("-")[0].lower()
    return f"local.{short}-x{gpus}"


def _base_node(
    name: str, ip: str, *, cpu: int, mem_gib: int, pods: int, instance: str, extra: dict[str, str]
) -> dict[str, Any]:
    capacity = {"cpu": str(cpu), "memory": f"{mem_gib}Gi", "ephemeral-storage": "7000Gi", "pods": str(pods)}
    # Reserve what a kubelet reserves for the system, so requests near capacity behave realistically.
    allocatable = dict(capacity)
    allocatable["cpu"] = f"{cpu * 1000 - 500}m"
    allocatable["memory"] = f"{mem_gib * 1024 - 2048}Mi"
    for key, value in extra.items():
        capacity[key] = allocatable[key] = value
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": instance,
                "topology.kubernetes.io/region": "local",
                "topology.kubernetes.io/zone": "local-a",
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "kwok fake node",
                "kubeletVersion": "v1.34.4",
                "containerRuntimeVersion": "kwok",
                "kernelVersion": "kwok",
                "kubeProxyVersion": "kwok",
                "bootID": "",
                "machineID": "",
                "systemUUID": "",
            },
        },
    }


def render_node(spec: NodeSpec, index: int) -> dict[str, Any]:
    """A GPU Node as a cloud GPU node registers it (GPU feature discovery labels, GPU taint)."""
    info = GPU_PRODUCTS.get(spec.gpu_product, _UNKNOWN_PRODUCT)
    gpus = spec.gpus_per_node
    node = _base_node(
        f"{spec.name_prefix}-{index}",
        f"10.0.{index // 250}.{index % 250 + 2}",
        cpu=max(info.cpu_per_gpu * max(gpus, 1), 4),
        mem_gib=max(info.memory_gib_per_gpu * max(gpus, 1), 16),
        pods=spec.pods_per_node,
        instance=instance_type(spec.gpu_product, gpus),
        extra={GPU_RESOURCE: str(gpus)},
    )
    node["metadata"]["labels"].update(
        {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": spec.gpu_product,
            "nvidia.com/gpu.count": str(gpus),
            "nvidia.com/gpu.memory": str(info.memory_mib),
            "nvidia.com/gpu.family": info.family,
        }
    )
    node["spec"]["taints"] = [{"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": "NoSchedule"}]
    return node


def render_cpu_node(spec: NodeSpec, index: int) -> dict[str, Any]:
    """An untainted CPU Node for everything that is not a GPU workload."""
    return _base_node(
        f"{spec.cpu_name_prefix}-{index}",
        f"10.1.{index // 250}.{index % 250 + 2}",
        cpu=CPU_NODE_CPUS,
        mem_gib=CPU_NODE_MEMORY_GIB,
        pods=spec.pods_per_node,
        instance=CPU_NODE_INSTANCE_TYPE,
        extra={},
    )


def render_nodes(spec: NodeSpec) -> list[dict[str, Any]]:
    """All nodes of *spec*: GPU nodes first, then CPU nodes."""
    return [render_node(spec, i) for i in range(spec.count)] + [
        render_cpu_node(spec, i) for i in range(spec.cpu_nodes)
    ]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render_kubeconfig(
    *,
    server: str,
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
    user: str,
    cluster_name: str = "phoenix-local",
) -> str:
    """A self-contained kubeconfig (certificates embedded) so it can be copied or exported alone."""
    context = f"{user}@{cluster_name}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {"name": cluster_name, "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)},
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": context,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kwok_stages_yaml() -> str:
    """kwok's default 'fast' node and pod stages (kwok v0.8.0, Apache-2.0), shipped as data."""
    return resources.files("phoenix_operator.cluster").joinpath("kwok-stages.yaml").read_text()


def render_kwok_config(*, pod_cidr: str = "10.244.0.0/16", node_lease_seconds: int = 40) -> str:
    """kwok's --config: its options plus the stages that make nodes Ready and pods Running/Ready."""
    options = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokConfiguration",
        # kwok applies its defaults only when no KwokConfiguration is given, so spell them out.
        "options": {
            "cidr": pod_cidr,
            "nodeLeaseDurationSeconds": node_lease_seconds,
            "nodeLeaseParallelism": 4,
            "podPlayStageParallelism": 4,
            "nodePlayStageParallelism": 4,
            "podsOnNodeSyncParallelism": 1,
            "manageAllNodes": False,
            "enableDebuggingHandlers": True,
            "enableContentionProfiling": False,
            "enableProfilingHandler": False,
            "enablePodsOnNodeSyncListPager": True,
            "enablePodsOnNodeSyncStreamWatch": False,
        },
    }
    return yaml.safe_dump(options, sort_keys=False) + "---\n" + kwok_stages_yaml()
