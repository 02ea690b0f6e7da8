"""Queries over the jobs read models: one job as a viewer sees it, its result and log lines,
open and pending work, the running count per owner, and the priority order."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import ColumnElement, Engine, case, func, select

from events.enums import OPEN_STATUSES, PRIORITY_RANK, JobStatus
from projections import tables as t
from projections.queries.visibility import Viewer, visible_jobs
from projections.readmodels.base import Row


class WorkRef(TypedDict):
    """A pending job to claim: what a work message names."""

    job_id: str
    type: str
    version: int


def priority_rank(column: Any) -> ColumnElement[Any]:
    """``column`` (a job priority) as its rank: low 0, normal 1, high 2 (unknown values last)."""
    return case(PRIORITY_RANK, value=column, else_=len(PRIORITY_RANK))


def job_by_id(engine: Engine, job_id: str, viewer: Viewer) -> Row | None:
    """The ``rm_jobs`` row of ``job_id`` if ``viewer`` may see it (:func:`visible_jobs`: live,
    and an editor's own), or None."""
    with engine.connect() as conn:
        row = conn.execute(visible_jobs(select(t.jobs), viewer).where(t.jobs.c.id == job_id)).mappings().first()
    return dict(row) if row is not None else None


def result_of_job(engine: Engine, job_id: str) -> Row | None:
    """The ``rm_job_results`` row of ``job_id``, or None before it completes."""
    with engine.connect() as conn:
        row = conn.execute(select(t.job_results).where(t.job_results.c.job_id == job_id)).mappings().first()
    return dict(row) if row is not None else None


def first_log_lines(engine: Engine, job_id: str, limit: int) -> list[Row]:
    """The first ``limit`` ``rm_job_logs`` rows of ``job_id``, in order (position, then seq)."""
    c = t.job_logs.c
    with engine.connect() as conn:
        rows = conn.execute(select(t.job_logs).where(c.job_id == job_id).order_by(c.position, c.seq).limit(limit))
        return [dict(r) for r in rows.mappings()]


def open_job_ids(engine: Engine, project_id: str) -> list[str]:
    """Ids of the project's pending and running jobs."""
    with engine.connect() as conn:
        stmt = select(t.jobs.c.id).where(t.jobs.c.project_id == project_id, t.jobs.c.status.in_(OPEN_STATUSES))
        return [str(r.id) for r in conn.execute(stmt)]


def running_jobs(engine: Engine, owner_id: str) -> int:
    """How many jobs of ``owner_id`` run now."""
    with engine.connect() as conn:
        stmt = select(func.count()).select_from(t.jobs)
        return int(
            conn.execute(stmt.where(t.jobs.c.created_by_id == owner_id, t.jobs.c.status == JobStatus.RUNNING)).scalar_one()
        )


def oldest_pending_job(
    engine: Engine,
    job_types: Sequence[str],
    *,
    priorities: Collection[str] | None = None,
    unchanged_since: datetime | None = None,
    exclude: Collection[str] = (),
) -> WorkRef | None:
    """The oldest (by ``created_at``) claimable job: pending, of ``job_types``, neither
    archived nor demo, of ``priorities`` (None: any), last changed before
    ``unchanged_since`` (None: whenever), whose id is not in ``exclude``; None if there is none."""
    c = t.jobs.c
    stmt = select(c.id, c.type, c.version).where(
        c.status == JobStatus.PENDING, c.type.in_(list(job_types)), c.archived.is_(False), c.demo.is_(False)
    )
    if priorities is not None:
        stmt = stmt.where(c.priority.in_(list(priorities)))
    if unchanged_since is not None:
        stmt = stmt.where(c.updated_at < unchanged_since)
    if exclude:
        stmt = stmt.where(c.id.not_in(list(exclude)))
    with engine.connect() as conn:
        row = conn.execute(stmt.order_by(c.created_at).limit(1)).first()
    return WorkRef(job_id=row.id, type=row.type, version=row.version) if row else None


__all__ = [
    "WorkRef",
    "first_log_lines",
    "job_by_id",
    "oldest_pending_job",
    "open_job_ids",
    "priority_rank",
    "result_of_job",
    "running_jobs",
]
