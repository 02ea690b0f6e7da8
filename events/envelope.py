"""The JSON envelope of a stored event, as published to Kafka and on ``/ws/events/``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from events.base import DomainEvent

_NAMESPACE = uuid.UUID("5c0f7a39-2f1e-4a53-9a55-0e0b3c1a7e11")
_HEADER_FIELDS = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic", "actor", "correlation_id"})


def event_type(event: object) -> str:
    """The event's type name, e.g. ``"JobSubmitted"``."""
    return type(event).__name__


def event_id(aggregate_id: object, version: int) -> str:
    """A stable id for an event: UUID 5 of ``aggregate_id:version`` (idempotency key)."""
    return str(uuid.uuid5(_NAMESPACE, f"{aggregate_id}:{version}"))


def jsonable(value: Any) -> Any:
    """``value`` with UUIDs, datetimes and tuples made JSON-friendly (recursively)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


#: Keys never copied out of the store, at any depth (secrets, even encrypted ones).
SECRET_KEYS = frozenset({"password", "password_hash", "api_key", "api_key_encrypted"})


def scrub(value: Any) -> Any:
    """``value`` with every :data:`SECRET_KEYS` entry removed, at any depth."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in SECRET_KEYS}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def event_data(event: DomainEvent) -> dict[str, Any]:
    """The event's own fields, without header fields, redacted fields and secrets."""
    hidden = _HEADER_FIELDS | set(getattr(event, "redacted_fields", ()))
    return {k: scrub(jsonable(v)) for k, v in event.__dict__.items() if k not in hidden}


def to_envelope(event: DomainEvent, position: int) -> dict[str, Any]:
    """The envelope of ``event`` stored at global ``position``.

    Shape: ``{event_id, type, aggregate_id, version, position, occurred_at, actor,
    correlation_id, schema_version, data}``.
    """
    return {
        "event_id": event_id(event.originator_id, event.originator_version),
        "type": event_type(event),
        "aggregate_id": str(event.originator_id),
        "version": event.originator_version,
        "position": position,
        "occurred_at": event.timestamp.isoformat(),
        "actor": jsonable(event.actor),
        "correlation_id": event.correlation_id,
        "schema_version": getattr(type(event), "class_version", 1),
        "data": event_data(event),
    }
