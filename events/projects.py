"""Events of the Project aggregate."""

from __future__ import annotations

from events.base import CreatedEvent


class ProjectCreated(CreatedEvent):
    """A project was created; ``owner_id`` is the owning user's id (str)."""

    name: str
    description: str
    owner_id: str
