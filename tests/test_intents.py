"""The reconciler's writes as intents (pure), and the one writer as the only caller of write APIs."""

from __future__ import annotations

import ast
import copy
import itertools
from pathlib import Path
from typing import Any

from api_cases import valid_doc
from phoenix_operator.api.models import PhoenixDeploymentSpec
from phoenix_operator.intents import UNREAD, ApplyChild, CreateSecret, DeleteChild, SetReplicas
from phoenix_operator.reconcile.plan import (
    LiveChildren,
    OwnedChild,
    apply_intents,
    generated_secret_intents,
    owned_child,
    prune_intents,
    replicas_intent,
)
from phoenix_operator.render.objects import Target, generated_secrets, render_all

TARGET = Target(name="chat", namespace="team", uid="uid-1")
PACKAGE = Path(__file__).resolve().parents[1] / "operator" / "phoenix_operator"


def _spec(**overrides: Any) -> PhoenixDeploymentSpec:
    doc = copy.deepcopy(valid_doc())["spec"]
    doc.update(overrides)
    return PhoenixDeploymentSpec.model_validate(doc)


def _values() -> Any:
    counter = itertools.count()
    return lambda: f"value-{next(counter)}"


# --------------------------------------------------------------------------------------------
# generated Secrets


def test_absent_secrets_are_created_with_fresh_values_and_present_ones_left_alone() -> None:
    wanted = generated_secrets(TARGET, _spec())
    assert wanted, "the spec references at least Triton's control key"
    intents, problems = generated_secret_intents(TARGET, wanted, {}, _values())
    assert problems == []
    assert [type(i) for i in intents] == [CreateSecret] * len(wanted)
    values = [v for i in intents for v in i.manifest["stringData"].values()]  # type: ignore[union-attr]
    assert len(set(values)) == len(values), "every random value is drawn afresh"

    live = {s.name: {k: "kept" for k in (*s.fixed, *s.random_keys)} for s in wanted}
    assert generated_secret_intents(TARGET, wanted, live, _values()) == ([], [])


def test_a_present_secret_without_its_values_is_reported_not_rewritten() -> None:
    wanted = generated_secrets(TARGET, _spec())
    first = wanted[0]
    live = {s.name: {k: "kept" for k in (*s.fixed, *s.random_keys)} for s in wanted}
    live[first.name] = {k: " " for k in first.random_keys}
    intents, problems = generated_secret_intents(TARGET, wanted, live, _values())
    assert intents == []
    assert [p.reason for p in problems] == ["GeneratedSecretInvalid"]
    assert first.name in problems[0].message and first.random_keys[0] in problems[0].message


# --------------------------------------------------------------------------------------------
# replicas and pruning


def test_replicas_belong_to_the_autoscaler_only_in_auto_mode() -> None:
    auto = {"mode": "auto", "minReplicas": 2, "maxReplicas": 6, "prometheusUrl": "http://prom:9090"}
    assert replicas_intent(TARGET, _spec(autoscaling={"mode": "off"}), {}) is None
    clamped = replicas_intent(TARGET, _spec(autoscaling=auto, triton={"replicas": 1}), {})
    assert clamped == SetReplicas("chat-triton", "team", 2)
    decided = replicas_intent(TARGET, _spec(autoscaling=auto), {"desiredReplicas": 5})
    assert decided == SetReplicas("chat-triton", "team", 5)


def test_only_our_unwanted_children_are_pruned() -> None:
    desired = [{"kind": "Service", "metadata": {"name": "chat-triton"}}]
    live = [
        OwnedChild("v1", "Service", "chat-triton", ("uid-1",)),  # still rendered
        OwnedChild("v1", "Service", "chat-old", ("uid-1",)),  # ours, no longer rendered
        OwnedChild("v1", "ConfigMap", "chat-triton", ("uid-1",)),  # same name, other kind
        OwnedChild("v1", "Service", "chat-foreign", ("uid-2",)),  # our label, someone else's
        OwnedChild("v1", "Service", "chat-orphan", ()),
    ]
    assert prune_intents(TARGET, desired, live) == [
        DeleteChild("v1", "Service", "chat-old", "team"),
        DeleteChild("v1", "ConfigMap", "chat-triton", "team"),
    ]
    assert prune_intents(Target(name="chat", namespace="team"), desired, live) == []


def test_owned_child_reads_the_owner_uids_of_a_live_object() -> None:
    live = {"metadata": {"name": "x", "ownerReferences": [{"uid": "a"}, {"uid": "b"}]}}
    assert owned_child("apps/v1", "Deployment", live) == OwnedChild("apps/v1", "Deployment", "x", ("a", "b"))
    assert owned_child("v1", "Service", {"metadata": {"name": "y"}}).owner_uids == ()


def test_one_pass_applies_secrets_then_children_then_replicas() -> None:
    auto = {"mode": "auto", "minReplicas": 1, "maxReplicas": 4, "prometheusUrl": "http://prom:9090"}
    spec = _spec(autoscaling=auto)
    desired = render_all(TARGET, spec)
    secrets, _ = generated_secret_intents(TARGET, generated_secrets(TARGET, spec), {}, _values())
    intents = apply_intents(TARGET, spec, {}, desired, secrets)
    kinds = [type(i).__name__ for i in intents]
    assert kinds == ["CreateSecret"] * len(secrets) + ["ApplyChild"] * len(desired) + ["SetReplicas"]
    assert [i.manifest for i in intents if isinstance(i, ApplyChild)] == desired


def test_the_writer_is_handed_what_the_listing_saw_and_reads_only_what_it_did_not() -> None:
    auto = {"mode": "auto", "minReplicas": 1, "maxReplicas": 4, "prometheusUrl": "http://prom:9090"}
    spec = _spec(autoscaling=auto)
    desired = render_all(TARGET, spec)
    deployment = next(o for o in desired if o["kind"] == "Deployment")
    live = LiveChildren()
    live.add_listing("apps/v1", "Deployment", [deployment])
    live.add_listing("v1", "Service", [])
    intents = apply_intents(TARGET, spec, {}, desired, [], live)
    seen = {
        (i.manifest["kind"], i.manifest["metadata"]["name"]): i.live
        for i in intents
        if isinstance(i, ApplyChild)
    }
    assert seen[("Deployment", deployment["metadata"]["name"])] is deployment
    assert all(v is None for (kind, _), v in seen.items() if kind == "Service"), "listed, absent"
    assert seen[("ConfigMap", "chat-triton-config")] is UNREAD, "a kind not listed is read by the writer"
    (replicas,) = [i for i in intents if isinstance(i, SetReplicas)]
    assert replicas.live is deployment

    live.mark_changed([("Deployment", deployment["metadata"]["name"])])
    assert live.get("Deployment", deployment["metadata"]["name"]) is UNREAD, "written since: read again"
    assert [c.name for c in live.owned()] == [deployment["metadata"]["name"]], "pruning sees the listing"


# --------------------------------------------------------------------------------------------
# one writer

#: Methods that change the API (the Kube client's own, and the dynamic and typed clients') or what
#: Triton serves (its model control's).
WRITE_METHODS = {
    "apply",
    "load",
    "create_if_absent",
    "apply_replicas",
    "patch_status",
    "post_event",
    "server_side_apply",
    "delete",
    "create",
    "patch",
    "replace",
}
#: The operator's own packages (applications such as the demo or the local cluster act as users).
OPERATOR_PACKAGES = ("reconcile", "control", "runtime", "status", "render", "observation.py", "intents.py")
WRITER = PACKAGE / "clients" / "writer.py"


def _write_calls(path: Path) -> list[str]:
    """``receiver.method`` for each use of a write method of a Kubernetes client or of Triton's
    model control in ``path``.

    Uses, not only calls: a method handed on (``functools.partial(kube.apply, ...)``) writes
    as surely. A receiver counts when its text names ``kube``, ``resource``, ``core``, ``apps``
    or ``custom`` (Kubernetes) or ``control`` (Triton's model control); Milvus' client has a
    ``create`` too, on a receiver named for it.
    """
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in WRITE_METHODS:
            receiver = ast.unparse(node.value)
            if any(word in receiver for word in ("kube", "resource", "core", "apps", "custom", "control")):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {receiver}.{node.attr}")
    return found


def test_the_writer_is_the_only_caller_of_write_apis() -> None:
    files: list[Path] = []
    for name in OPERATOR_PACKAGES:
        path = PACKAGE / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    files += [p for p in sorted((PACKAGE / "clients").glob("*.py")) if p.name not in {"writer.py", "kube.py"}]
    assert len(files) > 20
    offenders = [call for path in files for call in _write_calls(path)]
    assert offenders == []


def test_the_scan_sees_the_writers_own_calls() -> None:
    """The detector is not blind: every kind of write the writer performs is found in it."""
    methods = {call.rsplit(".", 1)[1] for call in _write_calls(WRITER)}
    assert {
        "apply",
        "create_if_absent",
        "apply_replicas",
        "patch_status",
        "post_event",
        "delete",
        "load",
    } <= methods
