"""Leases of running jobs: a claimed job is owned by one processor until its lease
expires; heartbeats renew it. Heartbeats are cheap row updates, not events.

The reaper (in the relay process, under the relay's leadership) ends the attempt of every running job whose lease
expired or was never written, as ``worker_lost`` — retried if attempts are left."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, String, Table, and_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

from commands.context import Actor, Context
from commands.errors import Conflict
from commands.messages import EndAttempt
from commands.service import Platform
from projections import tables as t

log = logging.getLogger(__name__)
metadata = MetaData()

job_leases = Table(
    "job_leases",
    metadata,
    Column("job_id", String(36), primary_key=True),
    Column("processor_id", String(200), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

REAPER = Actor(id="reaper", username=None, role="processor")


class LeaseStore:
    """Leases in PostgreSQL; ``lease_s`` seconds each."""

    def __init__(self, engine: Engine, lease_s: float) -> None:
        self.engine, self.lease_s = engine, lease_s
        try:
            metadata.create_all(engine)
        except DBAPIError:  # another instance created it at the same moment
            metadata.create_all(engine)

    def _until(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.lease_s)

    def acquire(self, job_id: str, processor_id: str, attempt: int) -> None:
        """Take (or take over) the lease of a job this processor just claimed."""
        stmt = pg_insert(job_leases).values(job_id=job_id, processor_id=processor_id, attempt=attempt, expires_at=self._until())
        with self.engine.begin() as conn:
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["job_id"],
                    set_={"processor_id": processor_id, "attempt": attempt, "expires_at": stmt.excluded.expires_at},
                )
            )

    def renew(self, job_id: str, processor_id: str) -> bool:
        """Extend the lease; False if it is no longer this processor's."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(job_leases)
                .where(job_leases.c.job_id == job_id, job_leases.c.processor_id == processor_id)
                .values(expires_at=self._until())
            )
        return bool(done.rowcount)

    def release(self, job_id: str, processor_id: str) -> None:
        """Drop this processor's lease of a job."""
        with self.engine.begin() as conn:
            conn.execute(delete(job_leases).where(job_leases.c.job_id == job_id, job_leases.c.processor_id == processor_id))

    def lost_jobs(self, limit: int = 500) -> list[tuple[str, str | None, int]]:
        """Running jobs whose lease expired, or that were claimed more than a lease ago and
        never got one: ``[(job id, processor id, attempt)]``."""
        now = datetime.now(UTC)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.jobs.c.id, t.jobs.c.processor_id, t.jobs.c.attempt)
                .select_from(t.jobs.outerjoin(job_leases, job_leases.c.job_id == t.jobs.c.id))
                .where(
                    t.jobs.c.status == "running",
                    t.jobs.c.demo.is_(False),  # demo jobs (aiorch seed --demo) have no processor
                    or_(
                        job_leases.c.expires_at < now,
                        and_(job_leases.c.job_id.is_(None), t.jobs.c.started_at < now - timedelta(seconds=self.lease_s)),
                    ),
                )
                .limit(limit)
            ).all()
        return [(r.id, r.processor_id, r.attempt) for r in rows]


def reap(platform: Platform, leases: LeaseStore) -> int:
    """End the attempt of every job whose processor was lost; returns how many."""
    reaped = 0
    for job_id, processor_id, attempt in leases.lost_jobs():
        ctx = Context(REAPER, f"reap-{job_id}-{attempt}")
        try:
            retry, _ = platform.end_attempt(
                EndAttempt(
                    uuid.UUID(job_id),
                    "worker_lost",
                    f"processor {processor_id} stopped renewing its lease",
                    retryable=True,
                    processor_id=processor_id,
                    attempt=attempt,
                ),
                ctx,
            )
        except Conflict:
            continue  # it finished or moved on meanwhile
        if processor_id:
            leases.release(job_id, processor_id)
        log.warning("job %s: processor %s lost; %s", job_id, processor_id, "retrying" if retry else "failed for good")
        reaped += 1
    return reaped
