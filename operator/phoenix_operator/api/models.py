"""PhoenixDeployment spec and status: the single source of truth for the CRD schema.

Everything a user can write is declared here once. `phoenix_operator.api.crdgen` turns these
models into the structural OpenAPI schema of the CRD (with the CEL rules attached below), and the
operator parses live objects with the same models, so the API server and the operator can never
disagree on a field name, a default or a bound.

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel, to_snake
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

#: Object names in Kubernetes (DNS-1123 label) — reused wherever a name becomes an object name.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: Triton model names become directory names in the model repository.
MODEL_NAME = r"^[A-Za-z0-9_.-]+$"


def _any_case(word: str) -> str:
    """``jan`` -> ``[jJ][aA][nN]``: cron names are case-insensitive, and a ``(?i)`` flag is not
    read the same by every regex engine the pattern meets (pydantic's, the API server's)."""
    return "".join(f"[{c.lower()}{c.upper()}]" for c in word)


def _cron_field(number: str, names: tuple[str, ...] = (), any_mark: str = r"\*") -> str:
    """One cron field as robfig/cron (the CronJob controller's parser) reads it: ``*``, a value or
    a range, each with an optional ``/step`` (step >= 1), in a comma-separated list."""
    value = "(" + "|".join([number, *(_any_case(n) for n in names)]) + ")"
    item = f"({any_mark}|{value}(-{value})?)(/0*[1-9][0-9]{{0,2}})?"
    return f"{item}(,{item})*"


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: Five-field cron (minute 0-59, hour 0-23, day 1-31, month 1-12 or jan-dec, weekday 0-6 or
#: sun-sat) or a @macro: what the CronJob's parser accepts, so a schedule never passes here only
#: to fail when the CronJob is created. (A range written backwards, e.g. ``5-1``, is not caught.)
CRON = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
    + r"[ \t]+".join(
        [
            _cron_field(r"[0-5]?[0-9]"),
            _cron_field(r"[01]?[0-9]|2[0-3]"),
            _cron_field(r"0?[1-9]|[12][0-9]|3[01]", any_mark=r"\*|\?"),
            _cron_field(r"0?[1-9]|1[0-2]", _MONTHS),
            _cron_field(r"[0-6]", _WEEKDAYS, any_mark=r"\*|\?"),
        ]
    )
    + r")$"
)
#: Kubernetes resource quantity without a sign (e.g. 500m, 4Gi, 1.5, 2e3): requests, limits and
#: sizes are never negative.
QUANTITY = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
#: A quantity above zero (a volume's size).
POSITIVE_QUANTITY = (
    r"^([0-9]*[1-9][0-9]*(\.[0-9]*)?|[0-9]*\.[0-9]*[1-9][0-9]*)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
#: DNS-1123 subdomain (Secret, PriorityClass, ServiceAccount, StorageClass names); length <= 253.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: Label/annotation key: an optional DNS-subdomain prefix and ``/``, then a name of at most 63
#: characters (alphanumerics at both ends; ``-``, ``_``, ``.`` inside).
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
#: Label value: empty, or at most 63 characters with the label-name syntax.
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
#: Longest label key (253-character prefix, ``/``, 63-character name).
MAX_LABEL_KEY_LENGTH = 317
_LABEL_KEY_RE = re.compile(LABEL_KEY)


@dataclass(frozen=True)
class Rule:
    """A cross-field rule, enforced twice from one definition.

    ``cel`` goes into the CRD (``x-kubernetes-validations``), so the API server rejects bad
    objects at admission; ``check`` runs in pydantic, so `phoenix render -f` / `plan -f` reject
    the same files before they reach a cluster. tests/test_api_validation.py runs one table of
    invalid objects through both and fails if they ever disagree.
    """

    cel: str
    message: str
    check: Callable[[Any], bool]
    field: str | None = None

    def as_crd(self) -> dict[str, str]:
        entry = {"rule": self.cel, "message": self.message}
        if self.field:
            entry["fieldPath"] = self.field
        return entry


class ApiModel(BaseModel):
    """Base of every API object: camelCase aliases, unknown fields rejected, `__rules__` enforced.

    Rejecting unknown fields here matters for `phoenix render -f` and `phoenix plan -f`, which
    read files the API server has not pruned: a typo must fail loudly, not be ignored.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=True,
    )
    __rules__: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).__rules__:
            if not rule.check(self):
                where = f"{rule.field.lstrip('.')}: " if rule.field else ""
                raise ValueError(where + rule.message)
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.__rules__:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [r.as_crd() for r in cls.__rules__]
        return schema


Name = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
#: Names Kubernetes checks as DNS-1123 subdomains (PriorityClass, ServiceAccount, StorageClass).
Subdomain = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
StringMap = dict[str, Annotated[str, Field(max_length=4096)]]
#: Most entries in a label/annotation/selector map: bounds the CEL rule that checks its keys.
MAX_MAP_ENTRIES = 64
LabelMap = Annotated[
    dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]], Field(max_length=MAX_MAP_ENTRIES)
]
AnnotationMap = Annotated[StringMap, Field(max_length=MAX_MAP_ENTRIES)]


def iana_time_zones() -> tuple[str, ...]:
    """Every IANA time-zone name, from the pinned ``tzdata`` package (not the host's zoneinfo,
    so the generated CRD is the same on every machine)."""
    from importlib.resources import files

    text = files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return tuple(sorted(line.strip() for line in text.splitlines() if line.strip()))


_TIME_ZONES = frozenset(iana_time_zones())
TIME_ZONE_MESSAGE = "must be an IANA time zone name such as Europe/Berlin or UTC (as CronJob.spec.timeZone)"


def _check_time_zone(value: str) -> str:
    if value not in _TIME_ZONES:
        raise ValueError(TIME_ZONE_MESSAGE)
    return value


#: CronJob ``timeZone``: the CronJob controller refuses names the Go time package cannot load.
TimeZone = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self in [" + ", ".join(f"'{z}'" for z in sorted(_TIME_ZONES)) + "]",
                    "message": TIME_ZONE_MESSAGE,
                }
            ]
        },
    ),
    AfterValidator(_check_time_zone),
]


def label_keys_rule(field: str, what: str) -> Rule:
    """Every key of map ``field`` (camelCase) is a label key: ``prefix/name``, name <= 63 characters."""
    attribute = to_snake(field)
    return Rule(
        f"!has(self.{field}) || self.{field}.all(k, size(k) <= {MAX_LABEL_KEY_LENGTH}"
        f" && k.matches(r'{LABEL_KEY}'))",
        f"every {what} key must be a label key: an optional DNS-subdomain prefix and '/', then at most "
        "63 characters (letters, digits, '-', '_', '.'; alphanumeric at both ends)",
        check=lambda s: all(
            len(k) <= MAX_LABEL_KEY_LENGTH and _LABEL_KEY_RE.match(k) for k in getattr(s, attribute)
        ),
        field=f".{field}",
    )


# --------------------------------------------------------------------------------------------
# model


class Backend(StrEnum):
    VLLM = "vllm"
    TENSORRTLLM = "tensorrtllm"
    PYTHON = "python"
    ONNXRUNTIME = "onnxruntime"
    PYTORCH = "pytorch"
    TENSORFLOW = "tensorflow"


class PvcSource(ApiModel):
    """A PersistentVolumeClaim holding the Triton model repository."""

    claim_name: Name = Field(description="Name of the PVC in the PhoenixDeployment's namespace.")
    path: str = Field(
        default="/",
        max_length=1024,
        pattern=r"^/",
        description="Path of the model repository inside the volume.",
    )
    read_only: bool = Field(default=True, description="Mount the claim read-only.")


class ModelRepository(ApiModel):
    """Where Triton loads the model from: an object-store URI or a PVC (exactly one)."""

    __rules__ = (
        Rule(
            "has(self.uri) != has(self.pvc)",
            "exactly one of model.repository.uri or model.repository.pvc must be set",
            check=lambda s: (s.uri is None) != (s.pvc is None),
        ),
    )

    uri: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^(s3|gs|as|https?)://.+",
        description="Object-store URI passed to --model-repository (s3://, gs://, as://).",
    )
    pvc: PvcSource | None = Field(default=None, description="PVC holding the model repository.")
    credentials_secret: Name | None = Field(
        default=None,
        description="Secret whose keys become environment variables (e.g. AWS_ACCESS_KEY_ID).",
    )


class TensorSpec(ApiModel):
    """An input or output tensor, for backends that do not auto-complete their config."""

    name: str = Field(min_length=1, max_length=128)
    data_type: Literal[
        "TYPE_BOOL",
        "TYPE_UINT8",
        "TYPE_INT8",
        "TYPE_INT16",
        "TYPE_INT32",
        "TYPE_INT64",
        "TYPE_FP16",
        "TYPE_FP32",
        "TYPE_FP64",
        "TYPE_BF16",
        "TYPE_STRING",
    ] = Field(description="Triton data type.")
    dims: list[Annotated[int, Field(ge=-1)]] = Field(
        max_length=8, description="Shape without the batch dimension; -1 = variable."
    )
    optional: bool = False


class ModelSpec(ApiModel):
    """The model Triton serves."""

    name: str = Field(min_length=1, max_length=128, pattern=MODEL_NAME, description="Triton model name.")
    repository: ModelRepository
    backend: Backend = Field(description="Triton backend that runs the model.")
    max_batch_size: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="Triton max_batch_size: the hard upper bound on any batch, never exceeded by tuning.",
    )
    decoupled: bool = Field(
        default=True,
        description="Streaming (decoupled) model: responses per token; TTFT comes from the first response.",
    )
    instance_count: int = Field(
        default=1, ge=1, le=16, description="Model instances per GPU (Triton instance_group count)."
    )
    parameters: StringMap = Field(
        default_factory=dict, description="Backend parameters (Triton config `parameters`)."
    )
    inputs: list[TensorSpec] = Field(
        default_factory=list,
        max_length=32,
        description="Inputs, when the backend does not auto-complete them.",
    )
    outputs: list[TensorSpec] = Field(
        default_factory=list,
        max_length=32,
        description="Outputs, when the backend does not auto-complete them.",
    )


# --------------------------------------------------------------------------------------------
# triton


class Toleration(ApiModel):
    """A pod toleration (same fields and checks as core/v1 Toleration)."""

    __rules__ = (
        Rule(
            "self.operator != 'Exists' || !has(self.value) || self.value == ''",
            "value must be empty when operator is Exists",
            check=lambda s: s.operator != "Exists" or not s.value,
            field=".value",
        ),
        Rule(
            "has(self.key) || self.operator == 'Exists'",
            "operator must be Exists when key is empty (a toleration of every taint)",
            check=lambda s: s.key is not None or s.operator == "Exists",
            field=".operator",
        ),
        Rule(
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "effect must be NoExecute when tolerationSeconds is set",
            check=lambda s: s.toleration_seconds is None or s.effect == "NoExecute",
            field=".tolerationSeconds",
        ),
    )

    key: str | None = Field(default=None, max_length=MAX_LABEL_KEY_LENGTH, pattern=LABEL_KEY)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = Field(default=None, max_length=63, pattern=LABEL_VALUE)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)


class EnvVar(ApiModel):
    """An environment variable with a literal value (use secretEnvFrom for secrets)."""

    name: str = Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str = Field(default="", max_length=32768)


_QUANTITY_SUFFIXES = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Decimal(10) ** e for s, e in (("n", -9), ("u", -6), ("m", -3), ("k", 3), ("M", 6), ("G", 9))},
    **{s: Decimal(10) ** e for s, e in (("T", 12), ("P", 15), ("E", 18), ("", 0))},
}
_QUANTITY_RE = re.compile(QUANTITY)


def parse_quantity(text: str) -> Decimal:
    """The value of a resource quantity (``500m`` -> 0.5, ``1Gi`` -> 1073741824), to compare two."""
    match = _QUANTITY_RE.match(text)
    if match is None:
        raise ValueError(f"not a quantity: {text!r}")
    suffix = match.group(3) or ""
    if suffix[:1] in ("e", "E"):
        return Decimal(match.group(1)) * Decimal(10) ** int(suffix[1:])
    return Decimal(match.group(1)) * _QUANTITY_SUFFIXES[suffix]


#: Resource names a container may set without a domain prefix.
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")


def _resource_names_rule(field: str) -> Rule:
    """Resource names as the API server allows them: cpu, memory, ephemeral-storage, hugepages-<size>
    or a vendor's ``domain/name`` (e.g. example.com/fpga)."""
    standard = ", ".join(f"'{n}'" for n in STANDARD_RESOURCES)

    def check(s: Any) -> bool:
        return all(
            k in STANDARD_RESOURCES
            or k.startswith("hugepages-")
            or ("/" in k and len(k) <= MAX_LABEL_KEY_LENGTH and _LABEL_KEY_RE.match(k) is not None)
            for k in getattr(s, field)
        )

    return Rule(
        f"!has(self.{field}) || self.{field}.all(k, k in [{standard}] || k.startsWith('hugepages-')"
        f" || (k.contains('/') && size(k) <= {MAX_LABEL_KEY_LENGTH} && k.matches(r'{LABEL_KEY}')))",
        f"{field} names must be cpu, memory, ephemeral-storage, hugepages-<size> or a domain-prefixed "
        "name such as example.com/fpga",
        check=check,
        field=f".{field}",
    )


class Resources(ApiModel):
    """CPU/memory requests and limits of the Triton container; GPUs come from gpusPerReplica."""

    __rules__ = (
        Rule(
            "!has(self.requests) || !('nvidia.com/gpu' in self.requests)",
            "set GPUs with triton.gpusPerReplica, not resources.requests",
            check=lambda s: "nvidia.com/gpu" not in s.requests,
            field=".requests",
        ),
        Rule(
            "!has(self.limits) || !('nvidia.com/gpu' in self.limits)",
            "set GPUs with triton.gpusPerReplica, not resources.limits",
            check=lambda s: "nvidia.com/gpu" not in s.limits,
            field=".limits",
        ),
        _resource_names_rule("requests"),
        _resource_names_rule("limits"),
        Rule(
            "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits)"
            " || !isQuantity(self.requests[k]) || !isQuantity(self.limits[k])"
            " || quantity(self.requests[k]).compareTo(quantity(self.limits[k])) <= 0)",
            "every request must be <= its limit (as the API server requires of a container)",
            check=lambda s: all(
                parse_quantity(v) <= parse_quantity(s.limits[k])
                for k, v in s.requests.items()
                if k in s.limits
            ),
            field=".requests",
        ),
    )

    requests: dict[str, Annotated[str, Field(pattern=QUANTITY, max_length=64)]] = Field(
        default_factory=dict, max_length=16
    )
    limits: dict[str, Annotated[str, Field(pattern=QUANTITY, max_length=64)]] = Field(
        default_factory=dict, max_length=16
    )


DEFAULT_TTFT_BUCKETS_MS = (
    50,
    100,
    200,
    300,
    500,
    750,
    1000,
    1500,
    2000,
    2500,
    3000,
    4000,
    5000,
    7500,
    10000,
    20000,
)
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.01-vllm-python-py3"
DEFAULT_GPU_TOLERATION = Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")


class TritonSpec(ApiModel):
    """The Triton Inference Server pods."""

    __rules__ = (
        label_keys_rule("nodeSelector", "nodeSelector"),
        label_keys_rule("podLabels", "podLabels"),
        label_keys_rule("podAnnotations", "podAnnotations"),
    )

    image: str = Field(default=DEFAULT_TRITON_IMAGE, min_length=1, max_length=512)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[Name] = Field(default_factory=list, max_length=16)
    gpus_per_replica: int = Field(
        default=1, ge=0, le=16, description="nvidia.com/gpu per pod; 0 runs on CPU (KIND_CPU instances)."
    )
    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Replicas when autoscaling.mode is off or recommend (the scale subresource writes it).",
    )
    resources: Resources = Field(
        # One default for the whole object: a user who writes `resources` gets exactly what they
        # wrote, never a default limit mixed into their requests.
        default_factory=lambda: Resources(requests={"cpu": "4", "memory": "32Gi"}, limits={"memory": "32Gi"})
    )
    node_selector: LabelMap = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(
        default_factory=lambda: [DEFAULT_GPU_TOLERATION],
        max_length=32,
        description="Defaults to tolerating the usual nvidia.com/gpu taint.",
    )
    affinity: dict[str, Any] | None = Field(
        default=None, description="core/v1 Affinity, passed to the pods unchanged."
    )
    priority_class_name: Subdomain | None = None
    service_account_name: Subdomain | None = None
    args: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list, max_length=64, description="Extra tritonserver arguments."
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    pod_annotations: AnnotationMap = Field(default_factory=dict)
    pod_labels: LabelMap = Field(default_factory=dict)
    startup_timeout_seconds: int = Field(
        default=1800, ge=30, le=7200, description="How long a pod may take to load the model."
    )
    ttft_buckets_ms: list[Annotated[float, Field(gt=0, le=3_600_000)]] = Field(
        default_factory=lambda: [float(b) for b in DEFAULT_TTFT_BUCKETS_MS],
        max_length=64,
        description=(
            "Buckets of Triton's TTFT histogram (nv_inference_first_response_histogram_ms), rendered as "
            "model_metrics; Triton's defaults (100/500/2000/5000 ms) are too coarse for a 3 s p95. "
            "Empty = leave Triton's defaults (needed for Triton <= 24.10, which lacks model_metrics)."
        ),
    )


# --------------------------------------------------------------------------------------------
# batching


class BatchingBounds(ApiModel):
    """The envelope the control loop may move batching in; the spec's values are the start."""

    __rules__ = (
        Rule(
            "self.minQueueDelayMicroseconds <= self.maxQueueDelayMicroseconds",
            "minQueueDelayMicroseconds must be <= maxQueueDelayMicroseconds",
            check=lambda s: s.min_queue_delay_microseconds <= s.max_queue_delay_microseconds,
            field=".minQueueDelayMicroseconds",
        ),
        Rule(
            "self.minInstanceCount <= self.maxInstanceCount",
            "minInstanceCount must be <= maxInstanceCount",
            check=lambda s: s.min_instance_count <= s.max_instance_count,
            field=".minInstanceCount",
        ),
    )

    min_queue_delay_microseconds: int = Field(default=0, ge=0, le=10_000_000)
    max_queue_delay_microseconds: int = Field(default=50_000, ge=0, le=10_000_000)
    max_preferred_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Largest preferred batch size tuning may use (≤ maxBatchSize).",
    )
    min_instance_count: int = Field(default=1, ge=1, le=16)
    max_instance_count: int = Field(default=1, ge=1, le=16)


class BatchingSpec(ApiModel):
    """Triton dynamic batching: the initial settings and the bounds the tuner stays within."""

    __rules__ = (
        Rule(
            "self.bounds.minQueueDelayMicroseconds <= self.maxQueueDelayMicroseconds"
            " && self.maxQueueDelayMicroseconds <= self.bounds.maxQueueDelayMicroseconds",
            "maxQueueDelayMicroseconds must lie within bounds.min/maxQueueDelayMicroseconds",
            check=lambda s: (
                s.bounds.min_queue_delay_microseconds
                <= s.max_queue_delay_microseconds
                <= s.bounds.max_queue_delay_microseconds
            ),
            field=".maxQueueDelayMicroseconds",
        ),
        Rule(
            "self.preferredBatchSizes.all(i, self.preferredBatchSizes.exists_one(j, j == i))",
            "preferredBatchSizes must not repeat a size",
            check=lambda s: len(set(s.preferred_batch_sizes)) == len(s.preferred_batch_sizes),
            field=".preferredBatchSizes",
        ),
    )

    enabled: bool = Field(default=True, description="Render a dynamic_batching block at all.")
    preferred_batch_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [4, 8], max_length=16
    )
    max_queue_delay_microseconds: int = Field(default=2000, ge=0, le=10_000_000)
    preserve_ordering: bool = False
    bounds: BatchingBounds = Field(default_factory=BatchingBounds)


# --------------------------------------------------------------------------------------------
# priority


class TimeoutAction(StrEnum):
    REJECT = "REJECT"
    DELAY = "DELAY"


class QueuePolicy(ApiModel):
    """Triton ModelQueuePolicy for one priority level."""

    timeout_microseconds: int = Field(
        default=0, ge=0, le=3_600_000_000, description="Queue timeout; 0 = never time out."
    )
    timeout_action: TimeoutAction = Field(
        default=TimeoutAction.REJECT, description="REJECT drops a timed-out request, DELAY demotes it."
    )
    allow_timeout_override: bool = False
    max_queue_size: int = Field(default=0, ge=0, le=1_000_000, description="0 = unbounded.")


class PriorityClass(ApiModel):
    """A named request class mapped to a Triton priority level (1 = served first)."""

    name: Name
    level: int = Field(ge=1, le=16, description="Triton priority level; lower is served first.")
    ttft_target_seconds: float = Field(gt=0, le=600, description="TTFT p95 target for this class.")
    queue_policy: QueuePolicy = Field(default_factory=QueuePolicy)


def _default_classes() -> list[PriorityClass]:
    return [
        PriorityClass(name="urgent", level=1, ttft_target_seconds=1.5),
        PriorityClass(name="standard", level=2, ttft_target_seconds=3.0),
        PriorityClass(
            name="bulk",
            level=3,
            ttft_target_seconds=10.0,
            queue_policy=QueuePolicy(timeout_microseconds=30_000_000, timeout_action=TimeoutAction.REJECT),
        ),
    ]


class PrioritySpec(ApiModel):
    """Request classes, rendered into Triton's priority levels and per-level queue policies."""

    __rules__ = (
        Rule(
            "self.classes.exists(c, c.name == self.defaultClass)",
            "defaultClass must name one of priority.classes",
            check=lambda s: any(c.name == s.default_class for c in s.classes),
            field=".defaultClass",
        ),
        Rule(
            "self.classes.all(c, self.classes.exists_one(d, d.level == c.level))",
            "each priority class needs its own level",
            check=lambda s: len({c.level for c in s.classes}) == len(s.classes),
            field=".classes",
        ),
    )

    classes: list[PriorityClass] = Field(
        default_factory=_default_classes,
        min_length=1,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    default_class: Name = Field(default="standard", description="Class of requests that set no priority.")


# --------------------------------------------------------------------------------------------
# retrieval


class SecretKeyRef(ApiModel):
    name: Name
    key: str = Field(default="token", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


class ExternalMilvus(ApiModel):
    """A Milvus the user runs; Phoenix only connects and manages the collection."""

    uri: str = Field(min_length=1, max_length=1024, pattern=r"^(https?|tcp|grpc)://.+")
    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the Milvus token (user:password or API key)."
    )
    db_name: str = Field(default="default", min_length=1, max_length=255)


class ManagedMilvus(ApiModel):
    """A Milvus the operator runs (Milvus Operator CR when installed, else a standalone StatefulSet)."""

    image: str = Field(default="milvusdb/milvus:v2.5.4", min_length=1, max_length=512)
    storage_size: str = Field(default="20Gi", pattern=POSITIVE_QUANTITY, max_length=64)
    storage_class_name: Subdomain | None = None
    resources: Resources = Field(
        default_factory=lambda: Resources(requests={"cpu": "2", "memory": "8Gi"}, limits={"memory": "8Gi"})
    )


class MilvusSpec(ApiModel):
    __rules__ = (
        Rule(
            "self.mode != 'external' || has(self.external)",
            "milvus.external is required when milvus.mode is external",
            check=lambda s: s.mode != "external" or s.external is not None,
            field=".external",
        ),
        Rule(
            "self.mode != 'managed' || !has(self.external)",
            "milvus.external must not be set when milvus.mode is managed",
            check=lambda s: s.mode != "managed" or s.external is None,
            field=".external",
        ),
    )

    mode: Literal["managed", "external"] = "managed"
    managed: ManagedMilvus = Field(default_factory=ManagedMilvus)
    external: ExternalMilvus | None = None


class MetricType(StrEnum):
    COSINE = "COSINE"
    L2 = "L2"
    IP = "IP"


class IndexType(StrEnum):
    FLAT = "FLAT"
    AUTOINDEX = "AUTOINDEX"
    HNSW = "HNSW"
    HNSW_SQ = "HNSW_SQ"
    IVF_FLAT = "IVF_FLAT"
    IVF_SQ8 = "IVF_SQ8"
    IVF_PQ = "IVF_PQ"
    DISKANN = "DISKANN"
    SCANN = "SCANN"


ParamValue = int | float | str | bool


class IndexSpec(ApiModel):
    type: IndexType = IndexType.HNSW
    params: dict[str, ParamValue] = Field(
        default_factory=lambda: dict[str, ParamValue](M=16, efConstruction=200),
        description="Index build parameters, passed to Milvus unchanged.",
    )


class CollectionSpec(ApiModel):
    """The knowledge-base collection. Phoenix creates it when missing and never drops it."""

    name: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    dimension: int = Field(ge=2, le=32768, description="Embedding vector dimension.")
    metric: MetricType = MetricType.COSINE
    index: IndexSpec = Field(default_factory=IndexSpec)
    search_params: dict[str, ParamValue] = Field(
        default_factory=lambda: dict[str, ParamValue](ef=64),
        description="Search parameters for clients (published in the ConfigMap).",
    )
    replicas: int = Field(
        default=1, ge=1, le=16, description="In-memory replicas when loading the collection."
    )


class JobSpec(ApiModel):
    """A scheduled job Phoenix creates and reports (it does not implement the work itself)."""

    schedule: str = Field(pattern=CRON, max_length=128, description="Cron schedule (CronJob syntax).")
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Your own image (its command and args); omitted: the operator's image runs Phoenix's.",
    )
    command: list[Annotated[str, Field(max_length=1024)]] = Field(default_factory=list, max_length=32)
    args: list[Annotated[str, Field(max_length=1024)]] = Field(default_factory=list, max_length=64)
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    resources: Resources | None = None
    suspend: bool = False
    time_zone: TimeZone | None = Field(default=None, description="IANA time zone of the schedule.")


class FileOnClaim(ApiModel):
    claim_name: Name = Field(description="Name of the PVC in the PhoenixDeployment's namespace.")
    path: str = Field(
        max_length=1024,
        pattern=r"^/([^/]+/)*[^/]+$",
        description="Path of the file inside the volume.",
    )


class FileSource(ApiModel):
    """A file the operator's jobs read: a path on a PVC (mounted read-only) or an HTTP(S) URL."""

    __rules__ = (
        Rule(
            "has(self.url) != has(self.pvc)",
            "set exactly one of url and pvc",
            check=lambda s: (s.url is None) != (s.pvc is None),
        ),
    )

    url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://.+", description="A URL.")
    pvc: FileOnClaim | None = Field(default=None, description="A file on a PersistentVolumeClaim.")


class RefreshJobSpec(JobSpec):
    """The knowledge-base refresh: ``phoenix kb ingest --source`` by default, or your own image."""

    __rules__ = (
        Rule(
            "has(self.image) || has(self.source)",
            "refresh.source is required when refresh.image is omitted (the default job ingests it)",
            check=lambda s: s.image is not None or s.source is not None,
            field=".source",
        ),
    )

    source: FileSource | None = Field(
        default=None, description="Documents (JSONL or CSV: id, text, metadata) the default job ingests."
    )
    max_hit_at_k_drop: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="QualityGate: a refresh reporting hit@k more than this below the current one fails.",
    )


class RetrainingJobSpec(JobSpec):
    """Classifier retraining: ``phoenix classifier train`` + ``phoenix eval`` by default, or your own image.

    The job writes a candidate classifier directory and reports its figures in its termination
    message; the operator promotes it (the gateway loads it) only if it passes the QualityGate.
    """

    __rules__ = (
        Rule(
            "has(self.image) || has(self.data)",
            "retraining.data is required when retraining.image is omitted (the default job trains on it)",
            check=lambda s: s.image is not None or s.data is not None,
            field=".data",
        ),
    )

    data: FileSource | None = Field(
        default=None, description="Labelled conversations (CSV text,label) the default job trains on."
    )
    eval_data: FileSource | None = Field(
        default=None,
        description="Held-out labelled CSV the candidate is measured on (default: evaluation.data).",
    )
    max_f1_drop: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="QualityGate: a candidate more than this below the current macro-F1 is not promoted.",
    )


class RetrievalSpec(ApiModel):
    """The retrieval layer: Milvus and the knowledge-base collection."""

    milvus: MilvusSpec = Field(default_factory=MilvusSpec)
    collection: CollectionSpec
    refresh: RefreshJobSpec | None = Field(default=None, description="Knowledge-base refresh job.")


AnswerMetric = Literal["answer_f1", "exact_match"]


class FineTuningJobSpec(JobSpec):
    """LLM fine-tuning with your own image, promoted through the same gate as a retrained classifier.

    The job writes a new numbered version directory ``<model>/<N>/`` into the model repository and
    reports ``candidate_version`` and its answer-quality figures in its termination message; the
    operator pins Triton to version N (``version_policy``) only if the figure passes the gate.
    """

    __rules__ = (
        Rule(
            "has(self.image)",
            "fineTuning.image is required: fine-tuning runs your own image",
            check=lambda s: s.image is not None,
            field=".image",
        ),
    )

    metric: AnswerMetric = Field(
        default="answer_f1",
        description="The figure the gate judges: token-level answer F1 or exact match on held-out answers.",
    )
    min_score: float = Field(
        default=0.0, ge=0, le=1, description="Gate floor: a candidate scoring below this is not promoted."
    )
    max_score_drop: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Gate tolerance: a candidate more than this below the serving version is not promoted.",
    )


class MaintenanceSpec(ApiModel):
    """Scheduled retraining of the intent classifier and fine-tuning of the LLM, both gated."""

    retraining: RetrainingJobSpec | None = None
    fine_tuning: FineTuningJobSpec | None = Field(
        default=None, description="Bring-your-own LLM fine-tuning job proposing a new model version."
    )


# --------------------------------------------------------------------------------------------
# gateway (the request path)

DEFAULT_GATEWAY_IMAGE = "ghcr.io/phoenix-operator/phoenix-operator:0.1.0"
#: Header a client sets to choose its priority class, honoured only with allowClientPriority.
PRIORITY_HEADER = "x-phoenix-priority-class"
INTENT = r"^[A-Za-z0-9_.:-]+$"
#: Bounds of routes and their intents; they keep the cross-route CEL rule of GatewaySpec (every
#: intent against every route) within the API server's cost budget.
MAX_INTENT_LENGTH = 64
MAX_ROUTE_INTENTS = 100
MAX_ROUTES = 16


class IntentRoute(ApiModel):
    """Requests whose intent is one of ``intents`` go to ``priorityClass``.

    The route also fires when the intents' summed probability reaches ``minConfidence`` even if
    another intent ranks first: missing an urgent request costs more than promoting a routine one.
    """

    __rules__ = (
        Rule(
            "self.intents.all(i, self.intents.exists_one(j, j == i))",
            "a route must not list an intent twice",
            check=lambda s: len(set(s.intents)) == len(s.intents),
            field=".intents",
        ),
    )

    priority_class: Name = Field(description="One of priority.classes.")
    intents: list[Annotated[str, Field(min_length=1, max_length=MAX_INTENT_LENGTH, pattern=INTENT)]] = Field(
        min_length=1,
        max_length=MAX_ROUTE_INTENTS,
        description="Classifier intents (labels) routed to the class.",
    )
    min_confidence: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="Summed probability of these intents at which the route fires regardless of rank.",
    )


class ClassifierSource(ApiModel):
    """Where the gateway loads its intent classifier from (``phoenix classifier train --out``)."""

    __rules__ = (
        Rule(
            "!(has(self.pvc) && has(self.uri))",
            "set at most one of classifier.pvc and classifier.uri",
            check=lambda s: not (s.pvc is not None and s.uri is not None),
        ),
    )

    pvc: PvcSource | None = Field(default=None, description="PVC holding the classifier directory.")
    uri: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^https?://.+",
        description="HTTP(S) URL of a classifier directory archive (.tar.gz).",
    )


class GatewaySpec(ApiModel):
    """The chat endpoint: OpenAI-compatible API, intent-based priority, retrieval, streaming to Triton.

    Without ``classifier`` the gateway uses the classifier built into its image (trained on
    BANKING77's training split).
    """

    __rules__ = (
        Rule(
            "self.routes.all(r, r.intents.all(i, self.routes.exists_one(s, i in s.intents)))",
            "an intent may appear in only one of gateway.routes",
            check=lambda s: all(
                sum(intent in other.intents for other in s.routes) == 1
                for route in s.routes
                for intent in route.intents
            ),
            field=".routes",
        ),
        label_keys_rule("nodeSelector", "gateway.nodeSelector"),
    )

    enabled: bool = Field(default=True, description="Deploy the gateway.")
    image: str = Field(default=DEFAULT_GATEWAY_IMAGE, min_length=1, max_length=512)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    replicas: int = Field(default=2, ge=0, le=1000)
    resources: Resources = Field(
        default_factory=lambda: Resources(
            requests={"cpu": "500m", "memory": "768Mi"}, limits={"memory": "1536Mi"}
        )
    )
    node_selector: LabelMap = Field(default_factory=dict)
    served_model_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=MODEL_NAME,
        description="Model id clients send and /v1/models lists (defaults to model.name).",
    )
    classifier: ClassifierSource = Field(default_factory=ClassifierSource)
    routes: list[IntentRoute] = Field(
        default_factory=list,
        max_length=MAX_ROUTES,
        description="Intent-to-class routes, most urgent first; the rest use priority.defaultClass.",
    )
    allow_client_priority: bool = Field(
        default=False,
        description=f"Honour a client's {PRIORITY_HEADER} header instead of the classifier.",
    )
    top_k: int = Field(default=4, ge=1, le=64, description="Passages retrieved into each prompt.")
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, le=67_108_864, description="Largest request body accepted."
    )
    max_output_tokens: int = Field(default=512, ge=1, le=131_072, description="Cap on max_tokens.")
    request_timeout_seconds: float = Field(
        default=120, gt=0, le=3600, description="Upstream deadline of one chat request."
    )
    retrieval_ttft_share: float = Field(
        default=0.25,
        gt=0,
        lt=1,
        description=(
            "Share of the TTFT target that retrieval (embed + search) may take at p95 before the "
            "deployment reports RetrievalSlow; more Triton replicas cannot fix slow retrieval."
        ),
    )


# --------------------------------------------------------------------------------------------
# autoscaling & monitoring


class AutoscalingMode(StrEnum):
    OFF = "off"
    RECOMMEND = "recommend"
    AUTO = "auto"


#: Most a prompt token may weigh against a generated one (a load test's measure, bounded).
MAX_PROMPT_TOKEN_WEIGHT = 10.0


class ReplicaCapacity(ApiModel):
    """What one Triton replica sustains within the TTFT target, measured by a load test.

    ``phoenix plan --calibrate`` measures it (a ramped load against one replica) and prints the
    block to paste here. The control loop starts from it instead of learning capacity from
    scratch; the token mix it was measured at lets the loop rescale it when the live mix differs,
    weighing a prompt token as the load test measured; the saturation rate is where the queue
    starts to grow, so the loop plans sustained load at the measured capacity and lets a minute
    reach saturation before it orders a replica the queue has not asked for.
    """

    __rules__ = (
        Rule(
            "has(self.promptTokens) == has(self.outputTokens)",
            "promptTokens and outputTokens go together (the token mix the capacity was measured at)",
            check=lambda s: (s.prompt_tokens is None) == (s.output_tokens is None),
            field=".promptTokens",
        ),
        Rule(
            "!has(self.promptTokenWeight) || has(self.promptTokens)",
            "promptTokenWeight needs promptTokens and outputTokens (the mix it rescales from)",
            check=lambda s: s.prompt_token_weight is None or s.prompt_tokens is not None,
            field=".promptTokenWeight",
        ),
        Rule(
            "!has(self.saturationRequestsPerSecond)"
            " || self.saturationRequestsPerSecond >= self.requestsPerSecond",
            "saturationRequestsPerSecond must be >= requestsPerSecond (a replica serves at least "
            "what it serves within the target)",
            check=lambda s: (
                s.saturation_requests_per_second is None
                or s.saturation_requests_per_second >= s.requests_per_second
            ),
            field=".saturationRequestsPerSecond",
        ),
    )

    requests_per_second: float = Field(
        gt=0,
        le=1_000_000,
        description="Requests/s one replica serves with TTFT p95 within the target (load-tested).",
    )
    prompt_tokens: float | None = Field(
        default=None, gt=0, le=10_000_000, description="Mean prompt tokens per request of the load test."
    )
    output_tokens: float | None = Field(
        default=None, gt=0, le=10_000_000, description="Mean generated tokens per request of the load test."
    )
    saturation_requests_per_second: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="The most requests/s one replica completed in the load test, its queue never "
        "empty: past it the queue grows.",
    )
    prompt_token_weight: float | None = Field(
        default=None,
        ge=0,
        le=MAX_PROMPT_TOKEN_WEIGHT,
        description="A prompt token's cost relative to a generated one, from load tests of the "
        "mix's prompt-heavy and answer-heavy halves (default 0.2).",
    )


class AutoscalingSpec(ApiModel):
    """The control loop: SLO-driven replicas and live batching."""

    __rules__ = (
        Rule(
            "self.minReplicas <= self.maxReplicas",
            "minReplicas must be <= maxReplicas",
            check=lambda s: s.min_replicas <= s.max_replicas,
            field=".minReplicas",
        ),
        Rule(
            "self.mode == 'off' || has(self.prometheusUrl)",
            "prometheusUrl is required when mode is recommend or auto",
            check=lambda s: s.mode == "off" or s.prometheus_url is not None,
            field=".prometheusUrl",
        ),
    )

    mode: AutoscalingMode = Field(
        default=AutoscalingMode.OFF, description="off: nothing; recommend: decide and report only; auto: act."
    )
    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(default=4, ge=1, le=1000)
    prometheus_url: str | None = Field(default=None, max_length=1024, pattern=r"^https?://.+")
    interval_seconds: int = Field(default=30, ge=5, le=3600, description="Control-loop period.")
    ttft_p95_target_seconds: float = Field(default=3.0, gt=0, le=600)
    gpu_budget: int | None = Field(
        default=None, ge=1, le=100_000, description="Most GPUs the Triton fleet may hold at once."
    )
    scale_up_stabilization_seconds: int = Field(default=0, ge=0, le=3600)
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600)
    replica_startup_seconds: int = Field(
        default=120,
        ge=0,
        le=3600,
        description=(
            "How long a new Triton replica takes to serve (image pull + model load); the loop "
            "forecasts load this far ahead so capacity arrives before the peak does."
        ),
    )
    tune_batching: bool = Field(default=True, description="Let the loop retune batching live.")
    replica_capacity: ReplicaCapacity | None = Field(
        default=None,
        description=(
            "A replica's measured capacity (`phoenix plan --calibrate` prints it): the loop sizes the "
            "fleet from it at once and refines it online; without it capacity is learned from the "
            "fleet's own metrics, which oversizes the fleet until it has seen enough load."
        ),
    )
    metrics_selector: str | None = Field(
        default=None,
        max_length=1024,
        description="PromQL label matchers that select this deployment's Triton series (default by label).",
    )


#: Staleness bound of the quality figures when neither maxAgeSeconds nor a macro schedule says more.
DEFAULT_EVALUATION_MAX_AGE_SECONDS = 2 * 86_400
_MACRO_PERIOD_SECONDS = {
    "@hourly": 3_600,
    "@daily": 86_400,
    "@midnight": 86_400,
    "@weekly": 7 * 86_400,
    "@monthly": 31 * 86_400,
    "@yearly": 366 * 86_400,
    "@annually": 366 * 86_400,
}


class EvaluationSpec(ApiModel):
    """The scheduled offline evaluation (``phoenix eval``) whose figures become status.quality."""

    schedule: str = Field(pattern=CRON, max_length=128, description="Cron schedule (CronJob syntax).")
    data: FileSource = Field(description="Labelled CSV text,label[,doc_id] (held out from training).")
    image: str = Field(
        default=DEFAULT_GATEWAY_IMAGE, min_length=1, max_length=512, description="Image with `phoenix eval`."
    )
    resources: Resources | None = None
    suspend: bool = False
    time_zone: TimeZone | None = Field(default=None, description="IANA time zone of the schedule.")
    hit_at_k: bool = Field(
        default=False,
        description="Also measure retrieval hit@k through the knowledge-base alias (data needs doc_id).",
    )
    max_age_seconds: int | None = Field(
        default=None,
        ge=60,
        le=31_622_400,
        description="Figures older than this are Stale (default: 2 periods of a @macro schedule, or 2 days).",
    )

    def max_age(self) -> int:
        """The staleness bound in seconds."""
        if self.max_age_seconds is not None:
            return self.max_age_seconds
        period = _MACRO_PERIOD_SECONDS.get(self.schedule.strip())
        return 2 * period if period else DEFAULT_EVALUATION_MAX_AGE_SECONDS


class MonitoringSpec(ApiModel):
    """Alert thresholds rendered into a PrometheusRule, and the evaluation that measures F1."""

    ttft_p95_alert_seconds: float | None = Field(
        default=None, gt=0, le=600, description="Defaults to autoscaling.ttftP95TargetSeconds."
    )
    error_rate_alert: float = Field(default=0.01, ge=0, le=1)
    min_f1: float = Field(default=0.8, ge=0, le=1, description="F1 floor from the offline evaluation.")
    prometheus_rule: bool = Field(default=True, description="Create a PrometheusRule when its CRD exists.")
    evaluation: EvaluationSpec | None = Field(
        default=None, description="Scheduled offline evaluation; its figures are status.quality and metrics."
    )


# --------------------------------------------------------------------------------------------
# top level

#: CronJob names may have at most 52 characters: each Job it starts appends 11 (``-<minutes>``)
#: and a Job's name ends up in a 63-character label.
CRONJOB_NAME_LIMIT = 52
#: The longest suffix Phoenix appends to a deployment's name for a child: the knowledge-base
#: refresh CronJob ``<name>-kb-refresh``. Every other child fits with room to spare: Services
#: (``-gateway``, ``-triton``, ``-milvus``) are DNS-1035 labels of <= 63, the Milvus
#: StatefulSet's pods carry ``<name>-milvus-<revision hash>`` (<= 63) in a label, ConfigMaps
#: (``-triton-config``, ``-gateway-spec``) allow 253.
LONGEST_CRONJOB_SUFFIX = "-kb-refresh"
MAX_DEPLOYMENT_NAME_LENGTH = CRONJOB_NAME_LIMIT - len(LONGEST_CRONJOB_SUFFIX)
#: A deployment's name starts the names of its Services, so it is a DNS-1035 label (letter first).
DEPLOYMENT_NAME = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
_DEPLOYMENT_NAME_RE = re.compile(DEPLOYMENT_NAME)


def _name_of(doc: Any) -> str | None:
    name = (doc.metadata or {}).get("name")
    return name if isinstance(name, str) else None


#: Rules on ``metadata.name``, attached at the CRD's root (the only level that sees metadata).
NAME_RULES: tuple[Rule, ...] = (
    Rule(
        f"size(self.metadata.name) <= {MAX_DEPLOYMENT_NAME_LENGTH}",
        f"metadata.name may have at most {MAX_DEPLOYMENT_NAME_LENGTH} characters: the children are named "
        f"after it, and the longest, the CronJob <name>{LONGEST_CRONJOB_SUFFIX}, may have at most "
        f"{CRONJOB_NAME_LIMIT} (its Jobs append 11)",
        check=lambda d: (name := _name_of(d)) is None or len(name) <= MAX_DEPLOYMENT_NAME_LENGTH,
    ),
    Rule(
        f"self.metadata.name.matches(r'{DEPLOYMENT_NAME}')",
        "metadata.name must start with a letter and hold only lowercase letters, digits and '-': "
        "it begins the names of the deployment's Services, which are DNS-1035 labels",
        check=lambda d: (name := _name_of(d)) is None or _DEPLOYMENT_NAME_RE.match(name) is not None,
    ),
)


class PhoenixDeploymentSpec(ApiModel):
    """Desired state of a customer-service LLM stack."""

    __rules__ = (
        Rule(
            "!has(self.batching) || self.batching.preferredBatchSizes.all(s, s <= self.model.maxBatchSize)",
            "every batching.preferredBatchSizes entry must be <= model.maxBatchSize",
            check=lambda s: all(b <= s.model.max_batch_size for b in s.batching.preferred_batch_sizes),
            field=".batching.preferredBatchSizes",
        ),
        Rule(
            "!has(self.batching) || !has(self.batching.bounds.maxPreferredBatchSize)"
            " || self.batching.bounds.maxPreferredBatchSize <= self.model.maxBatchSize",
            "batching.bounds.maxPreferredBatchSize must be <= model.maxBatchSize",
            check=lambda s: (
                s.batching.bounds.max_preferred_batch_size is None
                or s.batching.bounds.max_preferred_batch_size <= s.model.max_batch_size
            ),
            field=".batching.bounds.maxPreferredBatchSize",
        ),
        Rule(
            "!has(self.batching) || (self.batching.bounds.minInstanceCount <= self.model.instanceCount"
            " && self.model.instanceCount <= self.batching.bounds.maxInstanceCount)",
            "model.instanceCount must lie within batching.bounds.min/maxInstanceCount",
            check=lambda s: (
                s.batching.bounds.min_instance_count
                <= s.model.instance_count
                <= s.batching.bounds.max_instance_count
            ),
            field=".model.instanceCount",
        ),
        Rule(
            "!has(self.autoscaling) || !has(self.autoscaling.gpuBudget)"
            " || self.autoscaling.gpuBudget >= self.autoscaling.minReplicas * self.triton.gpusPerReplica",
            "autoscaling.gpuBudget must cover minReplicas × triton.gpusPerReplica",
            check=lambda s: (
                s.autoscaling.gpu_budget is None
                or s.autoscaling.gpu_budget >= s.autoscaling.min_replicas * s.triton.gpus_per_replica
            ),
            field=".autoscaling.gpuBudget",
        ),
        Rule(
            "!has(self.gateway) || self.gateway.routes.all(r, has(self.priority)"
            " && self.priority.classes.exists(c, c.name == r.priorityClass))",
            "every gateway.routes[].priorityClass must name one of priority.classes",
            check=lambda s: all(
                s.priority is not None and any(c.name == r.priority_class for c in s.priority.classes)
                for r in s.gateway.routes
            ),
            field=".gateway.routes",
        ),
        Rule(
            "!has(self.maintenance) || !has(self.maintenance.retraining)"
            " || has(self.maintenance.retraining.image)"
            " || (has(self.gateway) && has(self.gateway.classifier) && has(self.gateway.classifier.pvc))",
            "the default retraining writes candidates to gateway.classifier.pvc: set it, or an image",
            check=lambda s: (
                s.maintenance is None
                or s.maintenance.retraining is None
                or s.maintenance.retraining.image is not None
                or s.gateway.classifier.pvc is not None
            ),
            field=".maintenance.retraining",
        ),
        Rule(
            "!has(self.maintenance) || !has(self.maintenance.retraining)"
            " || has(self.maintenance.retraining.image)"
            " || has(self.maintenance.retraining.evalData)"
            " || (has(self.monitoring) && has(self.monitoring.evaluation))",
            "the default maintenance.retraining needs held-out data: set retraining.evalData or"
            " monitoring.evaluation",
            check=lambda s: (
                s.maintenance is None
                or s.maintenance.retraining is None
                or s.maintenance.retraining.image is not None
                or s.maintenance.retraining.eval_data is not None
                or s.monitoring.evaluation is not None
            ),
            field=".maintenance.retraining.evalData",
        ),
    )

    model: ModelSpec
    triton: TritonSpec = Field(default_factory=TritonSpec)
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    priority: PrioritySpec | None = Field(
        default=None, description="Request classes; without it Triton uses a single FIFO level."
    )
    retrieval: RetrievalSpec | None = None
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    maintenance: MaintenanceSpec | None = None
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)


# --------------------------------------------------------------------------------------------
# status


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A metav1.Condition-shaped entry."""

    type: str = Field(max_length=316)
    status: ConditionStatus
    reason: str = Field(max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: str = Field(description="RFC 3339 time the status last changed.")
    observed_generation: int | None = None


class BatchingStatus(ApiModel):
    """The batching configuration Triton runs with now."""

    preferred_batch_sizes: list[int] = Field(default_factory=list)
    max_queue_delay_microseconds: int = 0
    instance_count: int = 1
    source: Literal["spec", "tuned"] = "spec"
    applied_at: str | None = None


class DecisionRecord(ApiModel):
    """One control-loop decision, kept so users can see what Phoenix did and why."""

    time: str
    action: str = Field(description="scale, batching, hold, ...")
    rule: str | None = Field(
        default=None,
        description="The policy rule that decided: fail-static, breach, feed-forward, scale-down, "
        "stabilisation, batching or hold.",
    )
    summary: str
    reason: str
    applied: bool
    mode: str
    metrics: dict[str, float | None] = Field(default_factory=dict)


class RetrievalStatus(ApiModel):
    endpoint: str | None = None
    collection: str | None = None
    row_count: int | None = None
    index_type: str | None = None
    index_state: str | None = None
    loaded: bool | None = None


class GatewayStatus(ApiModel):
    """The chat endpoint as clients reach it inside the cluster, and the embedder it runs."""

    endpoint: str | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    available_replicas: int | None = None
    embedder: str | None = None
    embedder_dimension: int | None = None


class JobStatus(ApiModel):
    schedule: str
    suspended: bool = False
    last_schedule_time: str | None = None
    last_successful_time: str | None = None


class QualityGateStatus(ApiModel):
    """The last QualityGate decision on a retraining or refresh candidate."""

    kind: Literal["retraining", "refresh"]
    job_name: str
    candidate: str | None = None
    passed: bool
    reason: str
    message: str
    candidate_macro_f1: float | None = None
    current_macro_f1: float | None = None
    candidate_hit_at_k: float | None = None
    current_hit_at_k: float | None = None
    decided_at: str


class ModelGateStatus(ApiModel):
    """The last gate decision on a fine-tuned model version, with both figures."""

    job_name: str
    candidate_version: int | None = None
    serving_version: int | None = None
    metric: str
    passed: bool
    reason: str
    message: str
    candidate_score: float | None = None
    serving_score: float | None = None
    decided_at: str


class ModelVersionStatus(ApiModel):
    """The LLM version Triton is pinned to (``version_policy``) and how it got there."""

    serving_version: int | None = Field(
        default=None, description="The version Triton serves; None: Triton's default (latest) policy."
    )
    previous_version: int | None = Field(default=None, description="The version before it, for rollback.")
    metric: str | None = None
    score: float | None = Field(default=None, description="The serving version's figure when it was judged.")
    job_name: str | None = Field(default=None, description="The job that proposed the serving version.")
    promoted_at: str | None = None
    applied_version: int | None = Field(
        default=None, description="The version confirmed live on every ready Triton endpoint."
    )
    apply_message: str | None = Field(default=None, description="What the last live apply did.")
    gate: ModelGateStatus | None = None


class QualityStatus(ApiModel):
    """Figures of the last offline evaluation (its Job's termination message), and the gate's state."""

    macro_f1: float | None = None
    accuracy: float | None = None
    urgent_recall: float | None = None
    urgent_precision: float | None = None
    hit_at_k: float | None = None
    examples: int | None = None
    evaluated_at: str | None = Field(default=None, description="When the evaluation's container finished.")
    job_name: str | None = None
    source: str | None = Field(default=None, description="The labelled data it was measured on.")
    classifier: str | None = Field(
        default=None, description="Promoted retraining candidate the gateway loads (none: the spec's)."
    )
    gate: QualityGateStatus | None = None
    model: ModelVersionStatus | None = Field(
        default=None, description="The fine-tuned LLM version served and the last fine-tuning gate decision."
    )
    last_error: str | None = Field(default=None, description="Why the last report could not be read.")
    seen_jobs: dict[str, str] = Field(
        default_factory=dict, description="Last Job whose report was read, per kind (each is read once)."
    )


class PhoenixDeploymentStatus(ApiModel):
    """Observed state, written by the operator only."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: int | None = None
    ready_replicas: int | None = None
    desired_replicas: int | None = None
    selector: str | None = None
    gpus_allocated: int | None = None
    ttft_p95_seconds: float | None = None
    batching: BatchingStatus | None = None
    retrieval: RetrievalStatus | None = None
    gateway: GatewayStatus | None = None
    jobs: dict[str, JobStatus] = Field(default_factory=dict)
    quality: QualityStatus | None = None
    decisions: list[DecisionRecord] = Field(default_factory=list)
    last_decision_time: str | None = None


class PhoenixDeployment(BaseModel):
    """A whole object as read from a file or the API (metadata kept free-form)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: dict[str, Any]
    spec: PhoenixDeploymentSpec
    status: PhoenixDeploymentStatus | None = None

    @model_validator(mode="after")
    def _check_name(self) -> Self:
        """The API server's root-level rules on ``metadata.name`` (NAME_RULES), for files read
        without one (`phoenix render -f`)."""
        for rule in NAME_RULES:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self
