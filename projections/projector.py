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
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from projections import tables as t
from projections.failures import GENERATIONS_LIKE, PARKED, SKIPPED, describe, is_transient, park, skipped_reason
from projections.follow import NotificationSource, StoreWaiter
from projections.generations import create_generation, current_position, ensure_serving, tracking_name
from projections.readmodels import ReadModels
from projections.sanitize import sanitize_event

log = logging.getLogger(__name__)


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
        self._projections: dict[int, ReadModels] = {}
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
            projection = self._projections[generation] = ReadModels(t.generation(generation))
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

    def _apply_batch(self, conn: Connection, projection: ReadModels, name: str, notifications: Sequence[Any]) -> None:
        """Apply ``notifications`` in the caller's transaction. Fast path: the whole batch in
        one savepoint, each row's writes merged (:meth:`ReadModels.apply_batch`). When it
        fails, the batch again with one savepoint per event: an event that cannot be
        applied rolls back its own writes only and is parked
        (:func:`projections.failures.park`), the others are applied. Database troubles
        (lost connection, deadlock) are raised, so the batch is retried whole."""
        try:
            with conn.begin_nested():
                projection.apply_batch(((sanitize_event(self.decode(n)), n.id) for n in notifications), conn)
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
            projection = self._projections[generation] = ReadModels(t.generation(generation))
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


#: the name earlier versions gave the read models' applier
ReadModelProjection = ReadModels

__all__ = ["Projector", "ReadModelProjection", "ReadModels", "current_position"]
