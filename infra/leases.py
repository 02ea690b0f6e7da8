"""Leases of running jobs in PostgreSQL (``job_leases``): a claimed job is owned by one
processor until its lease expires; heartbeats renew it. Heartbeats are cheap row updates,
not events.

This module is the storage only: when a job counts as lost and what becomes of it is the
reaper's policy (:mod:`processors.reaper`), which reads the leases through
:class:`LeaseStore` (its :class:`processors.reaper.LeaseBook`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, String, Table, and_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from processors.reaper import Claim
from projections import tables as t

metadata = MetaData()

job_leases = Table(
    "job_leases",
    metadata,
    Column("job_id", String(36), primary_key=True),
    Column("processor_id", String(200), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)


class LeaseStore:
    """Leases in PostgreSQL; ``lease_s`` seconds each."""

    def __init__(self, engine: Engine, lease_s: float) -> None:
        self.engine, self.lease_s = engine, lease_s  # its table: by the schema step (infra.schema)

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

    def suspect_claims(self, now: datetime, limit: int = 500) -> list[Claim]:
        """Running jobs (not demo) whose lease expired before ``now``, or that were claimed
        more than a lease before it and never got one (the rule of
        :func:`processors.reaper.is_lost`, in SQL): at most ``limit``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.jobs.c.id, t.jobs.c.processor_id, t.jobs.c.attempt, t.jobs.c.started_at, job_leases.c.expires_at)
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
        return [Claim(r.id, r.processor_id, r.attempt, r.started_at, r.expires_at) for r in rows]


class JobLease:
    """The lease of one claimed job (a :class:`processors.job_run.Lease`), taken on creation."""

    def __init__(self, store: LeaseStore, job_id: str, processor_id: str, attempt: int) -> None:
        self.store, self.job_id, self.processor_id = store, job_id, processor_id
        store.acquire(job_id, processor_id, attempt)

    def renew(self) -> bool:
        """Extend the lease; False once another processor owns the job."""
        return self.store.renew(self.job_id, self.processor_id)

    def release(self) -> None:
        """Drop the lease."""
        self.store.release(self.job_id, self.processor_id)
