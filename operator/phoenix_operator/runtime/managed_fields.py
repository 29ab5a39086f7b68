"""Watched objects without ``metadata.managedFields``, as controller-runtime's informers keep them.

Kopf keeps the latest body of every PhoenixDeployment it runs a timer or daemon for, for the
object's whole life. About 40 % of that body is ``managedFields`` (one entry per field manager:
kubectl, Kopf's annotations, the operator's status writes), which nothing in the operator reads.
The API server offers no watch option to leave it out; client-go's answer is a transform on the
informer (``TransformStripManagedFields``). Kopf has no such hook, so this wraps the one function
its watch-stream workers hand every raw event to, before the event is kept or handled.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("phoenix_operator")


def without_managed_fields(raw_event: dict[str, Any]) -> dict[str, Any]:
    """Drop ``managedFields`` from a watch event's object, in place (the event is the watch's own)."""
    obj = raw_event.get("object")
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    return raw_event


def drop_managed_fields() -> bool:
    """Make every Kopf watch event arrive without ``managedFields``; True once installed.

    False, with a warning and nothing changed, if this Kopf keeps its event processor elsewhere:
    the operator then works as before with larger bodies.
    """
    unwrappable = "this Kopf version has no event processor to wrap: watched objects keep managedFields"
    try:
        from kopf._core.reactor import processing
    except ImportError:
        log.warning(unwrappable)
        return False
    original: Callable[..., Awaitable[Any]] | None = getattr(processing, "process_resource_event", None)
    if original is None:
        log.warning(unwrappable)
        return False
    if getattr(original, "drops_managed_fields", False):
        return True

    @functools.wraps(original)
    async def process_resource_event(*args: Any, raw_event: dict[str, Any], **kwargs: Any) -> Any:
        return await original(*args, raw_event=without_managed_fields(raw_event), **kwargs)

    process_resource_event.drops_managed_fields = True  # type: ignore[attr-defined]
    processing.process_resource_event = process_resource_event  # type: ignore[assignment]
    return True
