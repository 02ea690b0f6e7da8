"""Command handlers for projects."""

from __future__ import annotations

from uuid import UUID

from commands.base import Position, ServiceBase
from commands.context import Context, acting_as
from commands.errors import Conflict
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
    """Projects: editors own theirs, admins all, viewers none."""

    def create_project(self, cmd: CreateProject, ctx: Context) -> tuple[UUID, Position]:
        """Create a project owned by the actor. Raises Forbidden (viewer), InvalidCommand."""
        require_writer(ctx.actor)
        name, description = _name(cmd.name), _description(cmd.description)
        with acting_as(ctx):
            project = Project(name=name, description=description, owner_id=ctx.actor.id)
        return project.id, self._save(project)

    def update_project(self, cmd: UpdateProject, ctx: Context) -> Position:
        """Rename or re-describe a project (``None``: unchanged). Raises Forbidden, NotFound, InvalidCommand."""
        name = None if cmd.name is None else _name(cmd.name)
        description = clean_optional(cmd.description, "description", max_length=10_000, multiline=True)
        changes = {k: v for k, v in (("name", name), ("description", description)) if v is not None}

        def change(project: Project) -> None:
            require_owner(ctx.actor, project.owner_id, "project", project.id)
            project.update(changes)

        return self._change(Project, cmd.project_id, "project", ctx, change)

    def archive_project(self, cmd: ArchiveProject, ctx: Context) -> Position:
        """Archive a project; in the same transaction its pending jobs are cancelled and
        its running jobs asked to stop. Raises Forbidden, NotFound, Conflict."""
        for _attempt in range(5):
            project = self._load(Project, cmd.project_id, "project")
            require_owner(ctx.actor, project.owner_id, "project", project.id)
            jobs = [j for j in (self._get(Job, jid) for jid in self.open_job_ids(str(project.id))) if j is not None]
            with acting_as(ctx):
                project.archive()
                for job in jobs:
                    if job.status in (PENDING, RUNNING):
                        job.cancel("the project was archived")
            try:
                return self._save(project, *jobs)
            except Conflict:
                continue
        raise Conflict("the project's jobs kept changing; retry")
