"""The projector: follows the store and upserts the read models, committing its rows and
its tracking position in one transaction per batch (exactly-once, restart-safe).

Nothing stored can stop it (ARCHITECTURE.md invariant 11): strings are made storable
(:mod:`projections.sanitize`) before they reach a table, and an event that still cannot be
applied is parked in ``projection_failures`` within the same transaction, and the
projection moves on."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
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
    JobDeadLettered,
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
from events.webhooks import WebhookEndpointEvent
from projections import tables as t
from projections.failures import GENERATIONS_LIKE, PARKED, SKIPPED, describe, is_transient, park, skipped_reason
from projections.follow import NotificationSource, StoreWaiter
from projections.generations import create_generation, current_position, ensure_serving, tracking_name
from projections.sanitize import sanitize_event
from projections.webhook_endpoints import apply_endpoint_event

log = logging.getLogger(__name__)


class ReadModelProjection:
    """Applies one event to one generation's read-model tables (``tables``, see
    :func:`projections.tables.generation`) within the caller's transaction."""

    def __init__(self, tables: Any) -> None:
        self.t = tables

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
        conn.execute(pg_insert(self.t.users).values(row).on_conflict_do_nothing())

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
        self._touch(conn, self.t.users, e, position, **{k: v for k, v in e.changes.items() if k in ("email", "role")})

    @apply.register
    def _(self, e: UserDeactivated, conn: Connection, position: int) -> None:
        self._touch(conn, self.t.users, e, position, is_active=False)

    @apply.register
    def _(self, e: UserReactivated, conn: Connection, position: int) -> None:
        self._touch(conn, self.t.users, e, position, is_active=True, tokens_valid_after=e.timestamp, kept_session=None)

    @apply.register
    def _(self, e: UserPasswordChanged, conn: Connection, position: int) -> None:
        self._touch(
            conn,
            self.t.users,
            e,
            position,
            password_hash=e.password_hash,
            tokens_valid_after=e.timestamp,
            kept_session=e.kept_session,
        )

    @apply.register
    def _(self, e: UserLoggedOut, conn: Connection, position: int) -> None:
        row = {"session": e.session, "user_id": str(e.originator_id), "revoked_at": e.timestamp}
        conn.execute(pg_insert(self.t.revoked_sessions).values(row).on_conflict_do_nothing())

    @apply.register
    def _(self, e: ProjectUpdated, conn: Connection, position: int) -> None:
        self._touch(conn, self.t.projects, e, position, **e.changes)

    @apply.register
    def _(self, e: ProjectArchived, conn: Connection, position: int) -> None:
        self._touch(conn, self.t.projects, e, position, archived=True)

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
        conn.execute(pg_insert(self.t.settings).values(row).on_conflict_do_nothing())

    @apply.register
    def _(self, e: SettingChanged, conn: Connection, position: int) -> None:
        self._touch(conn, self.t.settings, e, position, value=e.value, deleted=False)

    @apply.register
    def _(self, e: SettingDeleted, conn: Connection, position: int) -> None:
        self._touch(conn, self.t.settings, e, position, deleted=True)

    @apply.register
    def _(self, e: AgentCreated, conn: Connection, position: int) -> None:
        owner = conn.execute(select(self.t.users.c.username).where(self.t.users.c.id == e.owner_id)).scalar()
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
        conn.execute(pg_insert(self.t.agents).values(row).on_conflict_do_nothing())

    @apply.register
    def _(self, e: AgentUpdated, conn: Connection, position: int) -> None:
        self._touch(conn, self.t.agents, e, position, **e.changes)

    @apply.register
    def _(self, e: AgentActivated, conn: Connection, position: int) -> None:
        self._touch(conn, self.t.agents, e, position, status="active")

    @apply.register
    def _(self, e: AgentDeactivated, conn: Connection, position: int) -> None:
        self._touch(conn, self.t.agents, e, position, status="inactive")

    @apply.register
    def _(self, e: AgentDeleted, conn: Connection, position: int) -> None:
        conn.execute(self.t.agents.delete().where(self.t.agents.c.id == str(e.originator_id)))

    @apply.register
    def _(self, e: WebhookEndpointEvent, conn: Connection, position: int) -> None:
        apply_endpoint_event(e, self.t, conn, position)

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
        conn.execute(pg_insert(self.t.providers).values(row).on_conflict_do_nothing())

    @apply.register
    def _(self, e: ProviderUpdated, conn: Connection, position: int) -> None:
        values = {k: v for k, v in e.changes.items() if k in ("name", "base_url", "enabled")}
        if "api_key_encrypted" in e.changes:
            values["has_api_key"] = bool(e.changes["api_key_encrypted"])
        self._touch(conn, self.t.providers, e, position, **values)

    @apply.register
    def _(self, e: ProviderDeleted, conn: Connection, position: int) -> None:
        conn.execute(self.t.providers.delete().where(self.t.providers.c.id == str(e.originator_id)))

    @apply.register
    def _(self, e: ProjectCreated, conn: Connection, position: int) -> None:
        owner = conn.execute(select(self.t.users.c.username).where(self.t.users.c.id == e.owner_id)).scalar()
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
        conn.execute(pg_insert(self.t.projects).values(row).on_conflict_do_nothing())

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
            "demo": e.demo,
            "version": e.originator_version,
            "position": position,
        }
        inserted = conn.execute(pg_insert(self.t.jobs).values(row).on_conflict_do_nothing().returning(self.t.jobs.c.id)).first()
        if inserted is not None:
            conn.execute(
                update(self.t.projects)
                .where(self.t.projects.c.id == e.project_id)
                .values(jobs_count=self.t.projects.c.jobs_count + 1)
            )

    def _job(self, conn: Connection, e: DomainEvent, position: int, **values: Any) -> None:
        conn.execute(
            update(self.t.jobs)
            .where(self.t.jobs.c.id == str(e.originator_id), self.t.jobs.c.version < e.originator_version)
            .values(updated_at=e.timestamp, version=e.originator_version, position=position, **values)
        )

    @apply.register
    def _(self, e: JobUpdated, conn: Connection, position: int) -> None:
        self._job(conn, e, position, **e.changes)

    @apply.register
    def _(self, e: JobRetried, conn: Connection, position: int) -> None:
        conn.execute(self.t.dead_letters.delete().where(self.t.dead_letters.c.id == str(e.originator_id)))
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
    def _(self, e: JobDeadLettered, conn: Connection, position: int) -> None:
        self._job(conn, e, position)
        job = conn.execute(
            select(self.t.jobs.c.type, self.t.jobs.c.created_by_id).where(self.t.jobs.c.id == str(e.originator_id))
        ).first()
        row = {
            "id": str(e.originator_id),
            "type": job.type if job else "",
            "code": e.code,
            "message": e.message,
            "attempts": e.attempts,
            "owner_id": job.created_by_id if job else "",
            "dead_lettered_at": e.timestamp,
            "position": position,
        }
        stmt = pg_insert(self.t.dead_letters).values(row)
        conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_={k: stmt.excluded[k] for k in row if k != "id"}))

    @apply.register
    def _(self, e: JobArchived, conn: Connection, position: int) -> None:
        self._job(conn, e, position, archived=True)
        project = conn.execute(select(self.t.jobs.c.project_id).where(self.t.jobs.c.id == str(e.originator_id))).scalar()
        conn.execute(
            update(self.t.projects).where(self.t.projects.c.id == project).values(jobs_count=self.t.projects.c.jobs_count - 1)
        )

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
            conn.execute(pg_insert(self.t.job_logs).values(rows).on_conflict_do_nothing())

    @apply.register
    def _(self, e: JobCompleted, conn: Connection, position: int) -> None:
        self._job(conn, e, position, status="completed", progress=100, stage="done", finished_at=e.timestamp, has_result=True)
        owner = conn.execute(select(self.t.jobs.c.created_by_id).where(self.t.jobs.c.id == str(e.originator_id))).scalar()
        row = {
            "id": str(e.originator_id),
            "job_id": str(e.originator_id),
            "owner_id": owner or "",
            "files": e.result.get("files", []),
            "meta": e.result.get("meta", {}),
            "finished_at": e.timestamp,
            "position": position,
        }
        conn.execute(pg_insert(self.t.job_results).values(row).on_conflict_do_nothing())

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
    """Follows the notification log and projects in batches into one generation of the
    read models, committing rows and the tracking position in one transaction.

    Without ``generation`` it serves the registry's serving generation and moves to a new
    one when a rebuild switches it. One instance is active per generation (a PostgreSQL
    session advisory lock); others wait as standbys and take over when it dies.

    Args:
        engine: SQLAlchemy engine of the read-model database (the store's database).
        source: the store's recorder (``select_notifications``).
        decode: turns a stored notification into a domain event (the store's mapper).
        waiter: blocks until the store has news.
        batch_size: events per transaction.
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
        generation: int | None = None,
    ) -> None:
        self.engine, self.source, self.decode, self.waiter = engine, source, decode, waiter
        self.batch_size, self.poll_interval_s = batch_size, poll_interval_s
        self.fixed_generation = generation
        self._stop = threading.Event()
        self._projections: dict[int, ReadModelProjection] = {}
        self.active = False

    def generation(self) -> int:
        """The generation this projector writes now."""
        if self.fixed_generation is not None:
            return self.fixed_generation
        return ensure_serving(self.engine)

    @property
    def name(self) -> str:
        """The tracking-record name of the current generation."""
        return tracking_name(self.generation())

    def create_tables(self) -> None:
        """Create the serving (or fixed) generation's tables if absent."""
        create_generation(self.engine, self.generation())

    def position(self) -> int:
        """The last position committed to this projector's generation (0 before any)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(t.tracking.c.position).where(t.tracking.c.name == self.name)).scalar() or 0)

    def run_once(self, generation: int | None = None) -> int:
        """Project the events after the tracked position, one batch; returns how many
        (parked ones included: the position moves past them, see :meth:`_apply_batch`)."""
        generation = generation or self.generation()
        name = tracking_name(generation)
        projection = self._projections.get(generation)
        if projection is None:
            projection = self._projections[generation] = ReadModelProjection(t.generation(generation))
        with self.engine.begin() as conn:
            # One writer per generation at a time: a concurrent runner waits here, then
            # reads the position this one committed.
            conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(name))))
            start = conn.execute(select(t.tracking.c.position).where(t.tracking.c.name == name)).scalar() or 0
            notifications = self.source.select_notifications(start, self.batch_size, inclusive_of_start=False)
            if not notifications:
                return 0
            self._apply_batch(conn, projection, name, notifications)
            last = notifications[-1].id
            stmt = pg_insert(t.tracking).values(name=name, position=last, updated_at=datetime.now().astimezone())
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["name"], set_={"position": last, "updated_at": stmt.excluded.updated_at}
                )
            )
            conn.execute(select(func.pg_notify("aiorch_projected", str(last))))  # delivered on commit (api/readwait.py)
        return len(notifications)

    def _apply_batch(self, conn: Connection, projection: ReadModelProjection, name: str, notifications: Sequence[Any]) -> None:
        """Apply ``notifications`` in the caller's transaction. Fast path: the whole batch in
        one savepoint. When it fails, the batch again with one savepoint per event: an
        event that cannot be applied rolls back its own writes only and is parked
        (:func:`projections.failures.park`), the others are applied. Database troubles
        (lost connection, deadlock) are raised, so the batch is retried whole."""
        try:
            with conn.begin_nested():
                for n in notifications:
                    projection.apply(sanitize_event(self.decode(n)), conn, n.id)
            return
        except Exception as exc:
            if is_transient(exc):
                raise
        for n in notifications:
            try:
                with conn.begin_nested():
                    projection.apply(sanitize_event(self.decode(n)), conn, n.id)
            except Exception as exc:
                if is_transient(exc):
                    raise
                error = describe(exc)
                # an event an operator skipped in the previous generation stays skipped
                reason = skipped_reason(conn, n.id, GENERATIONS_LIKE)
                park(conn, name, n.id, n.topic, error, state=SKIPPED if reason else PARKED, reason=reason)
                log.error("projection %s parked the event at position %s (%s): %s", name, n.id, n.topic, error)
                log.debug("the parked event's traceback", exc_info=True)

    def apply_one(self, generation: int, position: int) -> None:
        """Apply the stored event at ``position`` to ``generation`` again now (an operator's
        retry of a parked event), in one transaction with the generation's writer lock.

        Raises:
            LookupError: no event is stored at ``position``.
            Exception: whatever applying it raises (nothing is written then).
        """
        name = tracking_name(generation)
        projection = self._projections.get(generation)
        if projection is None:
            projection = self._projections[generation] = ReadModelProjection(t.generation(generation))
        with self.engine.begin() as conn:
            conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(name))))
            found = self.source.select_notifications(position, 1, stop=position)
            if not found or found[0].id != position:
                raise LookupError(f"no stored event at position {position}")
            projection.apply(sanitize_event(self.decode(found[0])), conn, position)

    def run_forever(self) -> None:
        """Project until :meth:`stop`: wait as a standby until this instance holds the
        generation's lock, then follow the store. Errors are logged and retried."""
        while not self._stop.is_set():
            try:
                with self.engine.connect() as lock_conn:
                    self._serve(lock_conn)
            except Exception:
                log.exception("projector failed; retrying")
                self.active = False
                self._stop.wait(1.0)

    def _serve(self, lock_conn: Connection) -> None:
        generation = self.generation()
        key = func.hashtext(f"aiorch-active-{tracking_name(generation)}")
        while not self._stop.is_set():  # standby until the active instance goes away
            if lock_conn.execute(select(func.pg_try_advisory_lock(key))).scalar():
                lock_conn.commit()
                break
            lock_conn.commit()
            self._stop.wait(self.poll_interval_s)
        else:
            return
        self.active = True
        log.info("projector active for generation %s", generation)
        try:
            while not self._stop.is_set():
                if self.fixed_generation is None and self.generation() != generation:
                    log.info("the read models switched to generation %s", self.generation())
                    return  # release the lock; serve the new generation
                if self.run_once(generation) == self.batch_size:
                    continue
                if self.waiter is not None:
                    self.waiter.wait(self.poll_interval_s)
                else:
                    self._stop.wait(self.poll_interval_s)
        finally:
            self.active = False
            lock_conn.execute(select(func.pg_advisory_unlock(key)))
            lock_conn.commit()

    def stop(self) -> None:
        """Ask :meth:`run_forever` to return after its current batch."""
        self._stop.set()


__all__ = ["Projector", "ReadModelProjection", "current_position"]
