"""The dead letters read model (``rm_dead_letters``): jobs that failed for good, until
retried."""

from __future__ import annotations

from functools import singledispatchmethod

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from events import DomainEvent, JobDeadLettered, JobRetried
from projections.readmodels.base import ReadModel, Row


def dead_letter_row(event: JobDeadLettered, position: int, job_type: str | None, owner_id: str | None) -> Row:
    """The dead letter of a job; ``job_type`` and ``owner_id`` are the job row's (None:
    unknown, stored as "")."""
    return {
        "id": str(event.originator_id),
        "type": job_type or "",
        "code": event.code,
        "message": event.message,
        "attempts": event.attempts,
        "owner_id": owner_id or "",
        "dead_lettered_at": event.timestamp,
        "position": position,
    }


class DeadLettersProjection(ReadModel):
    """``rm_dead_letters``: one row per dead-lettered job; a retry removes it."""

    reads_jobs = True
    handles = (JobDeadLettered, JobRetried)

    @singledispatchmethod
    def process_event(self, event: DomainEvent, conn: Connection, position: int) -> None:
        """Other events change no dead letter."""

    @process_event.register
    def _(self, event: JobDeadLettered, conn: Connection, position: int) -> None:
        jobs = self.t.jobs
        job = conn.execute(select(jobs.c.type, jobs.c.created_by_id).where(jobs.c.id == str(event.originator_id))).first()
        row = dead_letter_row(event, position, job.type if job else None, job.created_by_id if job else None)
        stmt = pg_insert(self.t.dead_letters).values(row)
        conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_={k: stmt.excluded[k] for k in row if k != "id"}))

    @process_event.register
    def _(self, event: JobRetried, conn: Connection, position: int) -> None:
        conn.execute(self.t.dead_letters.delete().where(self.t.dead_letters.c.id == str(event.originator_id)))


__all__ = ["DeadLettersProjection", "dead_letter_row"]
