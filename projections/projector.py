"""The projector: follows the store and upserts the read models, committing its rows and
its tracking position in one transaction per batch (exactly-once, restart-safe)."""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from functools import singledispatchmethod
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from events import (
    DomainEvent,
    JobArchived,
    JobCancelled,
    JobCancelRequested,
    JobCompleted,
    JobFailed,
    JobLogsAppended,
    JobProgressed,
    JobRetried,
    JobStarted,
    JobSubmitted,
    JobUpdated,
    ProjectArchived,
    ProjectCreated,
    ProjectUpdated,
    UserCreated,
    UserDeactivated,
    UserLoggedOut,
    UserPasswordChanged,
    UserReactivated,
    UserUpdated,
)
from events.agents import (
    AgentActivated,
    AgentCreated,
    AgentDeactivated,
    AgentDeleted,
    AgentUpdated,
    ProviderCreated,
    ProviderDeleted,
    ProviderUpdated,
)
from events.settings import SettingChanged, SettingCreated, SettingDeleted
from projections import tables as t
from projections.follow import NotificationSource, StoreWaiter

log = logging.getLogger(__name__)

NAME = f"read_models_{t.VERSION}"


class ReadModelProjection:
    """Applies one event to the read-model tables within the caller's transaction."""

    @singledispatchmethod
    def apply(self, event: DomainEvent, conn: Connection, position: int) -> None:
        """Events no read model needs are skipped (tracking still advances)."""

    @apply.register
    def _(self, e: UserCreated, conn: Connection, position: int) -> None:
        row = {
            "id": str(e.originator_id),
            "username": e.username,
            "email": e.email,
            "role": e.role,
            "is_active": True,
            "password_hash": e.password_hash,
            "created_at": e.timestamp,
            "updated_at": e.timestamp,
            "position": position,
        }
        conn.execute(pg_insert(t.users).values(row).on_conflict_do_nothing())

    @staticmethod
    def _touch(conn: Connection, table: Any, e: DomainEvent, position: int, **values: Any) -> None:
        """Update the row of ``e``'s aggregate unless it already includes ``position``."""
        conn.execute(
            update(table)
            .where(table.c.id == str(e.originator_id), table.c.position < position)
            .values(updated_at=e.timestamp, position=position, **values)
        )

    @apply.register
    def _(self, e: UserUpdated, conn: Connection, position: int) -> None:
        self._touch(conn, t.users, e, position, **{k: v for k, v in e.changes.items() if k in ("email", "role")})

    @apply.register
    def _(self, e: UserDeactivated, conn: Connection, position: int) -> None:
        self._touch(conn, t.users, e, position, is_active=False)

    @apply.register
    def _(self, e: UserReactivated, conn: Connection, position: int) -> None:
        self._touch(conn, t.users, e, position, is_active=True, tokens_valid_after=e.timestamp, kept_session=None)

    @apply.register
    def _(self, e: UserPasswordChanged, conn: Connection, position: int) -> None:
        self._touch(
            conn, t.users, e, position, password_hash=e.password_hash, tokens_valid_after=e.timestamp, kept_session=e.kept_session
        )

    @apply.register
    def _(self, e: UserLoggedOut, conn: Connection, position: int) -> None:
        row = {"session": e.session, "user_id": str(e.originator_id), "revoked_at": e.timestamp}
        conn.execute(pg_insert(t.revoked_sessions).values(row).on_conflict_do_nothing())

    @apply.register
    def _(self, e: ProjectUpdated, conn: Connection, position: int) -> None:
        self._touch(conn, t.projects, e, position, **e.changes)

    @apply.register
    def _(self, e: ProjectArchived, conn: Connection, position: int) -> None:
        self._touch(conn, t.projects, e, position, archived=True)

    @apply.register
    def _(self, e: SettingCreated, conn: Connection, position: int) -> None:
        row = {
            "id": str(e.originator_id),
            "key": e.key,
            "value": e.value,
            "user_id": e.user_id,
            "deleted": False,
            "created_at": e.timestamp,
            "updated_at": e.timestamp,
            "position": position,
        }
        conn.execute(pg_insert(t.settings).values(row).on_conflict_do_nothing())

    @apply.register
    def _(self, e: SettingChanged, conn: Connection, position: int) -> None:
        self._touch(conn, t.settings, e, position, value=e.value, deleted=False)

    @apply.register
    def _(self, e: SettingDeleted, conn: Connection, position: int) -> None:
        self._touch(conn, t.settings, e, position, deleted=True)

    @apply.register
    def _(self, e: AgentCreated, conn: Connection, position: int) -> None:
        owner = conn.execute(select(t.users.c.username).where(t.users.c.id == e.owner_id)).scalar()
        row = {
            "id": str(e.originator_id),
            "name": e.name,
            "description": e.description,
            "type": e.type,
            "status": "active",
            "configuration": e.configuration,
            "provider_id": e.provider_id,
            "owner_id": e.owner_id,
            "owner_username": owner,
            "created_at": e.timestamp,
            "updated_at": e.timestamp,
            "position": position,
        }
        conn.execute(pg_insert(t.agents).values(row).on_conflict_do_nothing())

    @apply.register
    def _(self, e: AgentUpdated, conn: Connection, position: int) -> None:
        self._touch(conn, t.agents, e, position, **e.changes)

    @apply.register
    def _(self, e: AgentActivated, conn: Connection, position: int) -> None:
        self._touch(conn, t.agents, e, position, status="active")

    @apply.register
    def _(self, e: AgentDeactivated, conn: Connection, position: int) -> None:
        self._touch(conn, t.agents, e, position, status="inactive")

    @apply.register
    def _(self, e: AgentDeleted, conn: Connection, position: int) -> None:
        conn.execute(t.agents.delete().where(t.agents.c.id == str(e.originator_id)))

    @apply.register
    def _(self, e: ProviderCreated, conn: Connection, position: int) -> None:
        row = {
            "id": str(e.originator_id),
            "name": e.name,
            "kind": e.kind,
            "base_url": e.base_url,
            "has_api_key": bool(e.api_key_encrypted),
            "enabled": e.enabled,
            "created_at": e.timestamp,
            "updated_at": e.timestamp,
            "position": position,
        }
        conn.execute(pg_insert(t.providers).values(row).on_conflict_do_nothing())

    @apply.register
    def _(self, e: ProviderUpdated, conn: Connection, position: int) -> None:
        values = {k: v for k, v in e.changes.items() if k in ("name", "base_url", "enabled")}
        if "api_key_encrypted" in e.changes:
            values["has_api_key"] = bool(e.changes["api_key_encrypted"])
        self._touch(conn, t.providers, e, position, **values)

    @apply.register
    def _(self, e: ProviderDeleted, conn: Connection, position: int) -> None:
        conn.execute(t.providers.delete().where(t.providers.c.id == str(e.originator_id)))

    @apply.register
    def _(self, e: ProjectCreated, conn: Connection, position: int) -> None:
        owner = conn.execute(select(t.users.c.username).where(t.users.c.id == e.owner_id)).scalar()
        row = {
            "id": str(e.originator_id),
            "name": e.name,
            "description": e.description,
            "owner_id": e.owner_id,
            "owner_username": owner or e.actor.get("username"),
            "jobs_count": 0,
            "archived": False,
            "created_at": e.timestamp,
            "updated_at": e.timestamp,
            "position": position,
        }
        conn.execute(pg_insert(t.projects).values(row).on_conflict_do_nothing())

    @apply.register
    def _(self, e: JobSubmitted, conn: Connection, position: int) -> None:
        row = {
            "id": str(e.originator_id),
            "project_id": e.project_id,
            "type": e.type,
            "status": "pending",
            "progress": 0,
            "stage": "queued",
            "priority": e.priority,
            "attempt": 1,
            "agent_id": e.agent_id,
            "parameters": e.parameters,
            "input_files": e.input_files,
            "created_by_id": e.owner_id,
            "created_by_username": e.actor.get("username"),
            "created_at": e.timestamp,
            "updated_at": e.timestamp,
            "has_result": False,
            "cancel_requested": False,
            "archived": False,
            "version": e.originator_version,
            "position": position,
        }
        inserted = conn.execute(pg_insert(t.jobs).values(row).on_conflict_do_nothing().returning(t.jobs.c.id)).first()
        if inserted is not None:
            conn.execute(update(t.projects).where(t.projects.c.id == e.project_id).values(jobs_count=t.projects.c.jobs_count + 1))

    def _job(self, conn: Connection, e: DomainEvent, position: int, **values: Any) -> None:
        conn.execute(
            update(t.jobs)
            .where(t.jobs.c.id == str(e.originator_id), t.jobs.c.version < e.originator_version)
            .values(updated_at=e.timestamp, version=e.originator_version, position=position, **values)
        )

    @apply.register
    def _(self, e: JobUpdated, conn: Connection, position: int) -> None:
        self._job(conn, e, position, **e.changes)

    @apply.register
    def _(self, e: JobRetried, conn: Connection, position: int) -> None:
        self._job(
            conn,
            e,
            position,
            status="pending",
            attempt=e.attempt,
            progress=0,
            stage="queued",
            processor_id=None,
            started_at=None,
            finished_at=None,
            error=None,
            has_result=False,
            cancel_requested=False,
        )

    @apply.register
    def _(self, e: JobArchived, conn: Connection, position: int) -> None:
        self._job(conn, e, position, archived=True)
        project = conn.execute(select(t.jobs.c.project_id).where(t.jobs.c.id == str(e.originator_id))).scalar()
        conn.execute(update(t.projects).where(t.projects.c.id == project).values(jobs_count=t.projects.c.jobs_count - 1))

    @apply.register
    def _(self, e: JobStarted, conn: Connection, position: int) -> None:
        self._job(
            conn,
            e,
            position,
            status="running",
            stage="started",
            attempt=e.attempt,
            processor_id=e.processor_id,
            started_at=e.timestamp,
            cancel_requested=False,
        )

    @apply.register
    def _(self, e: JobProgressed, conn: Connection, position: int) -> None:
        self._job(conn, e, position, progress=e.progress, stage=e.stage)

    @apply.register
    def _(self, e: JobLogsAppended, conn: Connection, position: int) -> None:
        self._job(conn, e, position)
        rows = [
            {
                "job_id": str(e.originator_id),
                "position": position,
                "seq": i,
                "at": datetime.fromisoformat(line["at"]),
                "level": line.get("level", "info"),
                "message": line["message"],
            }
            for i, line in enumerate(e.lines)
        ]
        if rows:
            conn.execute(pg_insert(t.job_logs).values(rows).on_conflict_do_nothing())

    @apply.register
    def _(self, e: JobCompleted, conn: Connection, position: int) -> None:
        self._job(conn, e, position, status="completed", progress=100, stage="done", finished_at=e.timestamp, has_result=True)
        owner = conn.execute(select(t.jobs.c.created_by_id).where(t.jobs.c.id == str(e.originator_id))).scalar()
        row = {
            "id": str(e.originator_id),
            "job_id": str(e.originator_id),
            "owner_id": owner or "",
            "files": e.result.get("files", []),
            "meta": e.result.get("meta", {}),
            "finished_at": e.timestamp,
            "position": position,
        }
        conn.execute(pg_insert(t.job_results).values(row).on_conflict_do_nothing())

    @apply.register
    def _(self, e: JobFailed, conn: Connection, position: int) -> None:
        self._job(
            conn,
            e,
            position,
            status="failed",
            finished_at=e.timestamp,
            stage="failed",
            error={"code": e.code, "message": e.message},
        )

    @apply.register
    def _(self, e: JobCancelRequested, conn: Connection, position: int) -> None:
        self._job(conn, e, position, cancel_requested=True)

    @apply.register
    def _(self, e: JobCancelled, conn: Connection, position: int) -> None:
        self._job(
            conn,
            e,
            position,
            status="cancelled",
            finished_at=e.timestamp,
            stage="cancelled",
            cancel_requested=True,
            error={"code": "cancelled", "message": e.reason},
        )


class Projector:
    """Follows the notification log from the tracked position and projects in batches.

    Args:
        engine: SQLAlchemy engine of the read-model database (the store's database).
        source: the store's recorder (``select_notifications``).
        decode: turns a stored notification into a domain event (the store's mapper).
        waiter: blocks until the store has news.
        batch_size: events per transaction (default 500).
    """

    def __init__(
        self,
        engine: Engine,
        source: NotificationSource,
        decode: Any,
        waiter: StoreWaiter | None = None,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 0.5,
        name: str = NAME,
    ) -> None:
        self.engine, self.source, self.decode, self.waiter = engine, source, decode, waiter
        self.batch_size, self.poll_interval_s, self.name = batch_size, poll_interval_s, name
        self.projection = ReadModelProjection()
        self._stop = threading.Event()

    def create_tables(self) -> None:
        """Create the read-model and tracking tables if absent."""
        t.metadata.create_all(self.engine)

    def position(self) -> int:
        """The last position committed to the read models (0 before any)."""
        with self.engine.connect() as conn:
            return current_position(conn, self.name)

    def run_once(self) -> int:
        """Project the events after the tracked position, one batch; returns how many."""
        with self.engine.begin() as conn:
            # One writer per projection at a time: a concurrent runner waits here, then
            # reads the position this one committed.
            conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(self.name))))
            start = current_position(conn, self.name)
            notifications = self.source.select_notifications(start, self.batch_size, inclusive_of_start=False)
            if not notifications:
                return 0
            for n in notifications:
                self.projection.apply(self.decode(n), conn, n.id)
            last = notifications[-1].id
            stmt = pg_insert(t.tracking).values(name=self.name, position=last, updated_at=datetime.now().astimezone())
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["name"], set_={"position": last, "updated_at": stmt.excluded.updated_at}
                )
            )
        return len(notifications)

    def run_forever(self) -> None:
        """Project until :meth:`stop`; database errors are logged and retried."""
        while not self._stop.is_set():
            try:
                if self.run_once() == self.batch_size:
                    continue
            except Exception:
                log.exception("projection %s failed; retrying", self.name)
                self._stop.wait(1.0)
                continue
            if self.waiter is not None:
                self.waiter.wait(self.poll_interval_s)
            else:
                self._stop.wait(self.poll_interval_s)

    def stop(self) -> None:
        """Ask :meth:`run_forever` to return after its current batch."""
        self._stop.set()


def current_position(conn: Connection, name: str = NAME) -> int:
    """The tracked position of projection ``name`` (0 before any event)."""
    return conn.execute(select(t.tracking.c.position).where(t.tracking.c.name == name)).scalar() or 0


__all__ = ["NAME", "Projector", "ReadModelProjection", "current_position"]
