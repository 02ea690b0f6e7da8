"""Processor membership in PostgreSQL (see :mod:`processors.membership`): one row per
running processor in ``processor_members``, stamped with the database's clock so machines
with skewed clocks agree on who is alive. A row counts as live while its last heartbeat is
younger than :data:`DEAD_AFTER_BEATS` of its own intervals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    Column,
    DateTime,
    Double,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from processors.membership import Member
from projections import tables as t

metadata = MetaData()

processor_members = Table(
    "processor_members",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("types", ARRAY(String(50)), nullable=False),
    Column("current_job_id", String(36), nullable=True),
    Column("heartbeat_s", Double, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("last_heartbeat_at", DateTime(timezone=True), nullable=False, index=True),
)

#: a processor is dead once this many of its heartbeat intervals passed without a beat
DEAD_AFTER_BEATS = 3
#: rows dead for longer than this many seconds are deleted by :meth:`ProcessorRoster.prune`
FORGET_AFTER_S = 24 * 3600.0


def _iso(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at is not None else None


class ProcessorRoster:
    """The ``processor_members`` table (created by the schema step, :mod:`infra.schema`): the
    :class:`processors.membership.Roster` the processors write, and the reads of readiness
    and the CLI."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def beat(self, member: Member, current_job: str | None) -> None:
        """Insert or refresh ``member``'s row (``last_heartbeat_at`` = the database's now)."""
        stmt = pg_insert(processor_members).values(
            id=member.id,
            host=member.host[:255],
            pid=member.pid,
            types=list(member.types),
            current_job_id=current_job,
            heartbeat_s=member.interval_s,
            started_at=member.started_at,
            last_heartbeat_at=func.now(),
        )
        with self.engine.begin() as conn:
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["id"],
                    set_={"current_job_id": current_job, "last_heartbeat_at": func.now(), "types": stmt.excluded.types},
                )
            )

    def leave(self, member_id: str) -> None:
        """Delete ``member_id``'s row."""
        with self.engine.begin() as conn:
            conn.execute(delete(processor_members).where(processor_members.c.id == member_id))

    def members(self, *, include_dead: bool = False) -> list[dict[str, Any]]:
        """``[{id, host, pid, types, current_job, started_at, last_heartbeat_at,
        heartbeat_age_s, live}]``, live ones by default, oldest start first (ISO 8601 times)."""
        c = processor_members.c
        age = func.extract("epoch", func.now() - c.last_heartbeat_at)
        live = age < c.heartbeat_s * DEAD_AFTER_BEATS
        stmt = select(processor_members, age.label("age"), live.label("live")).order_by(c.started_at, c.id)
        if not include_dead:
            stmt = stmt.where(live)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [
            {
                "id": r["id"],
                "host": r["host"],
                "pid": r["pid"],
                "types": list(r["types"]),
                "current_job": r["current_job_id"],
                "started_at": _iso(r["started_at"]),
                "last_heartbeat_at": _iso(r["last_heartbeat_at"]),
                "heartbeat_age_s": round(float(r["age"]), 3),
                "live": bool(r["live"]),
            }
            for r in rows
        ]

    def unserved(self, live: list[dict[str, Any]]) -> list[str]:
        """Job types with pending work (not archived) that no processor of ``live`` serves."""
        served = {ty for m in live for ty in m["types"]}
        with self.engine.connect() as conn:
            pending = conn.execute(
                select(t.jobs.c.type).where(t.jobs.c.status == "pending", t.jobs.c.archived.is_(False)).distinct()
            ).scalars()
            return sorted(ty for ty in pending if ty not in served)

    def prune(self, older_than_s: float = FORGET_AFTER_S) -> int:
        """Delete rows without a heartbeat for ``older_than_s`` seconds; returns how many."""
        c = processor_members.c
        with self.engine.begin() as conn:
            done = conn.execute(
                delete(processor_members).where(
                    c.last_heartbeat_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_s)
                )
            )
        return int(done.rowcount or 0)


def processors_check(roster: ProcessorRoster) -> Callable[[], Any]:
    """The readiness check of processors: ``{live: [{id, host, types, current_job,
    last_heartbeat_at}], unserved: [types]}`` — ``unserved`` names each job type with pending
    work and no live processor serving it. ``"unknown: <error>"`` when it cannot be read."""

    def check() -> Any:
        try:
            live = roster.members()
            unserved = roster.unserved(live)
        except Exception as exc:  # noqa: BLE001 - readiness reports, it never fails
            return f"unknown: {type(exc).__name__}"
        keep = ("id", "host", "types", "current_job", "last_heartbeat_at")
        return {"live": [{k: m[k] for k in keep} for m in live], "unserved": unserved}

    return check
