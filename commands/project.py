"""The Project aggregate: a named folder of jobs owned by one user."""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import event

from commands.aggregate import PlatformAggregate
from commands.errors import NotFound
from events.projects import ProjectArchived, ProjectCreated, ProjectUpdated


class Project(PlatformAggregate):
    """A project; ``owner_id`` is the owning user's id (str)."""

    ProjectCreated = ProjectCreated
    ProjectUpdated = ProjectUpdated
    ProjectArchived = ProjectArchived

    @event(ProjectCreated)
    def __init__(self, name: str, description: str, owner_id: str) -> None:
        self.name = name
        self.description = description
        self.owner_id = owner_id
        self.archived = False

    def update(self, changes: dict[str, Any]) -> None:
        """Change ``name`` / ``description``. Raises NotFound if archived."""
        self._require_live()
        real = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if real:
            self._updated(changes=real)

    def archive(self) -> None:
        """Archive the project (its jobs are cancelled by the service). Raises NotFound if archived."""
        self._require_live()
        self._archived()

    def _require_live(self) -> None:
        if self.archived:
            raise NotFound(f"no project {self.id}")

    @event(ProjectUpdated)
    def _updated(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            setattr(self, key, value)

    @event(ProjectArchived)
    def _archived(self) -> None:
        self.archived = True
