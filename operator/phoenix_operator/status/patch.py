"""The status patch the one writer sends, checked against the status model first.

The CRD's status schema is generated from ``PhoenixDeploymentStatus``; the API server would
prune a field it does not know and refuse a wrong type only for the whole patch, after the
fact. Checking the status a patch leaves behind against the same model turns a planner's
mistake into an error that names the field, before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from phoenix_operator.api.models import PhoenixDeploymentStatus


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, null removes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def checked_status_patch(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` unchanged, once the status it leaves validates against ``PhoenixDeploymentStatus``.

    Raises pydantic's ``ValidationError`` (naming the field) when it would not.
    """
    PhoenixDeploymentStatus.model_validate(merge_patch(current, patch))
    return dict(patch)
