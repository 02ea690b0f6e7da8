"""Events of the Project aggregate."""

from __future__ import annotations

from typing import Any

from events.base import CreatedEvent, DomainEvent


class ProjectCreated(CreatedEvent):
    """A project was created; ``owner_id`` is the owning user's id (str)."""

    name: str
    description: str
    owner_id: str


class ProjectUpdated(DomainEvent):
    """``changes`` maps ``name`` and/or ``description`` to new values."""

    changes: dict[str, Any]


class ProjectArchived(DomainEvent):
    """The project left every list; its history stays replayable."""
