"""The results read model (``rm_job_results``): one row per completed job."""

from __future__ import annotations

from functools import singledispatchmethod

from sqlalchemy import Connection, select

from events import DomainEvent, JobCompleted
from projections.readmodels.base import ReadModel, Row, insert_new


def result_row(event: JobCompleted, position: int, owner_id: str | None) -> Row:
    """The result row of a completed job; ``owner_id`` is the job's creator (None: unknown)."""
    return {
        "id": str(event.originator_id),
        "job_id": str(event.originator_id),
        "owner_id": owner_id or "",
        "files": event.result.get("files", []),
        "meta": event.result.get("meta", {}),
        "finished_at": event.timestamp,
        "position": position,
    }


class ResultsProjection(ReadModel):
    """``rm_job_results``: what ``/api/job-results/`` lists (the first result stays)."""

    reads_jobs = True
    handles = (JobCompleted,)

    @singledispatchmethod
    def process_event(self, event: DomainEvent, conn: Connection, position: int) -> None:
        """Other events make no result."""

    @process_event.register
    def _(self, event: JobCompleted, conn: Connection, position: int) -> None:
        jobs = self.t.jobs
        owner = conn.execute(select(jobs.c.created_by_id).where(jobs.c.id == str(event.originator_id))).scalar()
        insert_new(conn, self.t.job_results, result_row(event, position, owner))


__all__ = ["ResultsProjection", "result_row"]
