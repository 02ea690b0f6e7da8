"""The Project aggregate: a named folder of jobs owned by one user."""

from __future__ import annotations

from eventsourcing.domain import event

from commands.aggregate import PlatformAggregate
from events.projects import ProjectCreated


class Project(PlatformAggregate):
    """A project; ``owner_id`` is the owning user's id (str)."""

    ProjectCreated = ProjectCreated

    @event(ProjectCreated)
    def __init__(self, name: str, description: str, owner_id: str) -> None:
        self.name = name
        self.description = description
        self.owner_id = owner_id
