"""Command handlers for projects."""

from __future__ import annotations

from uuid import UUID

from commands.base import Position, ServiceBase, retry_on_conflict
from commands.context import Actor, Context
from commands.errors import NotFound
from commands.job import PENDING, RUNNING, Job
from commands.messages import ArchiveProject, CreateProject, UpdateProject
from commands.permissions import require_owner, require_writer
from commands.project import Project
from commands.text import clean_optional, clean_text


def _name(name: object) -> str:
    return clean_text(name, "name", min_length=1, max_length=200, strip=True)


def _description(description: object) -> str:
    return clean_text(description, "description", max_length=10_000, multiline=True)


class ProjectHandlers(ServiceBase):
    """Projects: editors own theirs, admins all, viewers none. Each handler reads
    load → check → change → save."""

    def _owned_project(self, project_id: UUID | str, actor: Actor) -> Project:
        """The project, loaded and checked. Raises NotFound (absent, archived, another
        editor's), Forbidden (a viewer)."""
        project = self._load(Project, project_id, "project")
        if project.archived:
            raise NotFound(f"no project {project_id}")
        require_owner(actor, project.owner_id, "project", project.id)
        return project

    @retry_on_conflict
    def create_project(self, cmd: CreateProject, ctx: Context) -> tuple[UUID, Position]:
        """Create a project owned by the actor. Raises Forbidden (viewer), InvalidCommand."""
        require_writer(ctx.actor)
        name, description = _name(cmd.name), _description(cmd.description)
        project = Project(name=name, description=description, owner_id=ctx.actor.id)
        return project.id, self._save(project)

    @retry_on_conflict
    def update_project(self, cmd: UpdateProject, ctx: Context) -> Position:
        """Rename or re-describe a project (``None``: unchanged). Raises Forbidden, NotFound, InvalidCommand."""
        project = self._owned_project(cmd.project_id, ctx.actor)
        name = None if cmd.name is None else _name(cmd.name)
        description = clean_optional(cmd.description, "description", max_length=10_000, multiline=True)
        project.update({k: v for k, v in (("name", name), ("description", description)) if v is not None})
        return self._save(project)

    @retry_on_conflict
    def archive_project(self, cmd: ArchiveProject, ctx: Context) -> Position:
        """Archive a project; in the same transaction its pending jobs are cancelled and
        its running jobs asked to stop. Raises Forbidden, NotFound."""
        project = self._owned_project(cmd.project_id, ctx.actor)
        found = (self._get(Job, job_id) for job_id in self.policies.open_job_ids(str(project.id)))
        jobs = [job for job in found if job is not None]
        project.archive()
        for job in jobs:
            if job.status in (PENDING, RUNNING):
                job.cancel("the project was archived")
        return self._save(project, *jobs)
