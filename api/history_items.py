"""A job's stored events as history items ``{position, version, type, occurred_at, actor,
correlation_id, data}``: the shape of ``GET /api/jobs/{id}/history/`` and ``aiorch jobs history``."""

from __future__ import annotations

from typing import Any

from events import to_envelope

ITEM_FIELDS = ("position", "version", "type", "occurred_at", "actor", "correlation_id", "data")


def history_item(position: int, event: Any) -> dict[str, Any]:
    """``{position, version, type, occurred_at, actor, correlation_id, data}`` of a domain
    event stored at global ``position``."""
    return item_of(to_envelope(event, position))


def item_of(envelope: dict[str, Any]) -> dict[str, Any]:
    """The history item of an event envelope (``events.to_envelope``)."""
    return {k: envelope[k] for k in ITEM_FIELDS}
