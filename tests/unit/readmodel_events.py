"""Domain events built by hand for the read models' unit tests: ``make(cls, version, **fields)``
stamps the fields every event carries (id, version, a time one minute per version apart,
actor, correlation id)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from events.base import CreatedEvent, DomainEvent

E = TypeVar("E", bound=DomainEvent)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ACTOR = {"id": "u-1", "username": "alice", "role": "editor"}


def at(version: int) -> datetime:
    """When the event of ``version`` occurred: T0 plus ``version`` minutes."""
    return T0 + timedelta(minutes=version)


def make(cls: type[E], version: int = 1, *, aggregate_id: uuid.UUID | None = None, **fields: Any) -> E:
    """An event of ``cls`` at ``version`` of aggregate ``aggregate_id`` (a fixed one by default)."""
    stamp: dict[str, Any] = {
        "originator_id": aggregate_id or uuid.UUID(int=1),
        "originator_version": version,
        "timestamp": at(version),
        "actor": fields.pop("actor", ACTOR),
        "correlation_id": "req-1",
    }
    if issubclass(cls, CreatedEvent):
        stamp["originator_topic"] = "tests:Aggregate"
    return cls(**stamp, **fields)
