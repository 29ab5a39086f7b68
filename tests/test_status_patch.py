"""The one writer's check: a status patch must leave a status the CRD's model accepts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from phoenix_operator.status.patch import checked_status_patch, merge_patch

READY = {
    "type": "Ready",
    "status": "True",
    "reason": "AllReplicasReady",
    "lastTransitionTime": "2026-12-05T10:00:00Z",
}


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]}
    patch = {"a": "z", "c": {"f": None}, "list": [3], "new": {"x": 1}}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}, "list": [3], "new": {"x": 1}}
    assert merge_patch({"a": 1}, None) is None and merge_patch({"a": 1}, {"a": None}) == {}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]}  # not modified


def test_a_valid_patch_passes_unchanged() -> None:
    current = {"replicas": 2, "quality": {"macroF1": 0.8, "gate": None}}
    patch = {"conditions": [READY], "readyReplicas": 2, "ttftP95Seconds": None, "quality": {"accuracy": 0.9}}
    assert checked_status_patch(current, patch) == patch


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"conditions": [{**READY, "status": "Maybe"}]}, "conditions.0.status"),
        ({"conditions": [{"type": "Ready", "status": "True"}]}, "conditions.0.reason"),
        ({"readyReplicas": "three"}, "readyReplicas"),
        ({"batching": {"preferredBatchSizes": [4], "source": "guessed"}}, "batching.source"),
        ({"quality": {"macroF1": 0.8, "f1Score": 0.8}}, "quality.f1Score"),
    ],
)
def test_a_patch_that_breaks_the_model_is_refused_naming_the_field(patch: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        checked_status_patch({"replicas": 1}, patch)
    located = {".".join(str(p) for p in e["loc"]) for e in err.value.errors()}
    assert field in located, located


def test_a_removal_is_judged_on_what_it_leaves() -> None:
    # Removing an optional figure is fine; removing a required one from a nested object is not.
    gate = {
        "kind": "refresh", "jobName": "j", "passed": True, "reason": "Passed", "message": "ok",
        "decidedAt": "2026-12-05T10:00:00Z",
    }  # fmt: skip
    current = {"quality": {"gate": gate, "hitAtK": 0.9}}
    assert checked_status_patch(current, {"quality": {"hitAtK": None}})
    with pytest.raises(ValidationError):
        checked_status_patch(current, {"quality": {"gate": {"jobName": None}}})
