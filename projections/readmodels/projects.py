"""The projects read model (``rm_projects``), with each project's count of live jobs."""

from __future__ import annotations

from functools import singledispatch, singledispatchmethod

from sqlalchemy import Connection, exists, select, update

from events import DomainEvent, JobArchived, JobSubmitted, ProjectArchived, ProjectCreated, ProjectUpdated
from projections.readmodels.base import ReadModel, Row, insert_new, touch, touched


def project_created(event: ProjectCreated, position: int, owner_username: str | None) -> Row:
    """The row of a new project; ``owner_username`` is the owner's from the users read
    model (None: the creator's name as the event's actor gives it)."""
    return {
        "id": str(event.originator_id),
        "name": event.name,
        "description": event.description,
        "owner_id": event.owner_id,
        "owner_username": owner_username or event.actor.get("username"),
        "jobs_count": 0,
        "archived": False,
        "created_at": event.timestamp,
        "updated_at": event.timestamp,
        "position": position,
    }


@singledispatch
def project_changes(event: DomainEvent) -> Row:
    """The project columns ``event`` sets. Raises TypeError for an event of no project change."""
    raise TypeError(f"{type(event).__name__} changes no project")


@project_changes.register
def _(event: ProjectUpdated) -> Row:
    return dict(event.changes)


@project_changes.register
def _(event: ProjectArchived) -> Row:
    return {"archived": True}


def project_row(row: Row | None, event: DomainEvent, position: int, owner_username: str | None = None) -> Row:
    """The project row after a project event (pure; ``jobs_count`` moves with
    :func:`jobs_count_delta`). Raises ValueError for a change before creation."""
    if isinstance(event, ProjectCreated):
        return row if row is not None else project_created(event, position, owner_username)
    if row is None:
        raise ValueError(f"{type(event).__name__} of project {event.originator_id} before its ProjectCreated")
    return touched(row, event, position, project_changes(event))


def jobs_count_delta(event: DomainEvent) -> int:
    """How a job event moves its project's ``jobs_count``: +1 submitted, -1 archived, else 0."""
    if isinstance(event, JobSubmitted):
        return 1
    return -1 if isinstance(event, JobArchived) else 0


class ProjectsProjection(ReadModel):
    """``rm_projects``: one row per project. It counts jobs from the job events, so it runs
    before the jobs read model (a submission counts once: when its job row is new)."""

    reads_jobs = True
    handles = (ProjectCreated, ProjectUpdated, ProjectArchived, JobSubmitted, JobArchived)

    @singledispatchmethod
    def process_event(self, event: DomainEvent, conn: Connection, position: int) -> None:
        """Other events change no project."""

    @process_event.register
    def _(self, event: ProjectCreated, conn: Connection, position: int) -> None:
        users = self.t.users
        owner = conn.execute(select(users.c.username).where(users.c.id == event.owner_id)).scalar()
        insert_new(conn, self.t.projects, project_created(event, position, owner))

    @process_event.register
    def _(self, event: ProjectUpdated | ProjectArchived, conn: Connection, position: int) -> None:
        touch(conn, self.t.projects, event, position, project_changes(event))

    @process_event.register
    def _(self, event: JobSubmitted, conn: Connection, position: int) -> None:
        projects, jobs = self.t.projects, self.t.jobs
        new_job = ~exists().where(jobs.c.id == str(event.originator_id))
        conn.execute(
            update(projects)
            .where(projects.c.id == event.project_id, new_job)
            .values(jobs_count=projects.c.jobs_count + jobs_count_delta(event))
        )

    @process_event.register
    def _(self, event: JobArchived, conn: Connection, position: int) -> None:
        projects, jobs = self.t.projects, self.t.jobs
        project = select(jobs.c.project_id).where(jobs.c.id == str(event.originator_id)).scalar_subquery()
        conn.execute(
            update(projects).where(projects.c.id == project).values(jobs_count=projects.c.jobs_count + jobs_count_delta(event))
        )


__all__ = ["ProjectsProjection", "jobs_count_delta", "project_changes", "project_created", "project_row"]
