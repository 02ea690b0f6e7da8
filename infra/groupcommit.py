"""Group commit for the event store: concurrent commands' events appended in one transaction.

eventsourcing's PostgreSQL application recorder takes an ``EXCLUSIVE`` lock on the events
table for every append, so that positions (notification ids) become visible in the order
they were issued: no reader can pass a gap that a slower transaction fills in later. The
price is one transaction — lock, insert, commit (and its WAL flush) — per command, one
after the other.

:class:`GroupCommitRecorder` keeps that lock and that guarantee and shares the transaction:
while one thread commits, the appends that arrive queue up; the next thread to get the
commit mutex takes every queued append (at most :data:`MAX_GROUP` of them) and writes them
in one transaction, each inside its own ``SAVEPOINT``. So

- every command keeps its optimistic-concurrency check: an append whose
  ``(originator_id, originator_version)`` is taken fails alone with ``IntegrityError``
  (its savepoint is rolled back) and the others in the group still commit;
- the group commits once, under the table lock, so its positions become visible together
  and after every lower position: the notification order is the one readers saw before;
- a connection or server failure fails every append of the group with the same
  ``OperationalError``/``InterfaceError``, and each caller's retry appends again (the
  transaction was rolled back, nothing was half-written).

This is the group commit of database logs (DeWitt et al., *Implementation techniques for
main memory database systems*, SIGMOD 1984) applied one level up, with the leader/follower
hand-off of "flat combining" (Hendler et al., SPAA 2010). Enabled through eventsourcing's
``APPLICATION_RECORDER_TOPIC`` (see :func:`infra.db.store_env`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, cast

import psycopg
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry

MAX_GROUP = 256
"""The most appends written in one transaction (bounds a transaction's size and lock time)."""


class _Append:
    """One caller's append waiting in the queue: its stored events, then its outcome.

    ``wake`` is set when the append is settled (``done``) or when its caller is handed the
    leadership (``lead``): the next commit is then its caller's to make.
    """

    __slots__ = ("done", "error", "events", "ids", "lead", "wake")

    def __init__(self, events: Sequence[StoredEvent]) -> None:
        self.events = events
        self.ids: list[int] = []
        self.error: Exception | None = None
        self.done = False
        self.lead = False
        self.wake = threading.Event()


def _persistence_error(error: psycopg.Error) -> PersistenceError:
    """eventsourcing's exception for a psycopg one (as ``PostgresDatastore.get_connection``)."""
    kinds: list[tuple[type[psycopg.Error], type[PersistenceError]]] = [
        (psycopg.InterfaceError, InterfaceError),
        (psycopg.OperationalError, OperationalError),
        (psycopg.DataError, DataError),
        (psycopg.IntegrityError, IntegrityError),
        (psycopg.InternalError, InternalError),
        (psycopg.ProgrammingError, ProgrammingError),
        (psycopg.DatabaseError, DatabaseError),
    ]
    for source, target in kinds:
        if isinstance(error, source):
            return target(str(error))
    return PersistenceError(str(error))


class GroupCommitRecorder(PostgresApplicationRecorder):
    """A PostgreSQL application recorder that appends concurrent callers' events together.

    Same interface and guarantees as ``PostgresApplicationRecorder.insert_events`` (returns
    the new events' positions, raises ``IntegrityError`` on a version conflict,
    ``OperationalError`` when the database is away, retried 10 × 0.2 s as the base class);
    only the transactions are shared. ``groups`` and ``appends`` count transactions and the
    appends they carried (``appends / groups`` is the mean group size).
    """

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self._queue_lock = threading.Lock()
        self._queue: list[_Append] = []
        self._leading = False  # a caller is committing (or about to): the others wait
        self.groups = 0
        self.appends = 0

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Append ``stored_events`` (one command's) and return their positions, in order.

        Raises IntegrityError when one of them conflicts with a stored event (this append
        only); OperationalError/InterfaceError when the database cannot be reached after
        the retries.
        """
        if any(v is not None for v in kwargs.values()) or not stored_events or self.datastore.enable_db_functions:
            return cast("Sequence[int] | None", super().insert_events(stored_events, **kwargs))
        return cast("Sequence[int]", self._append_grouped(stored_events))

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _append_grouped(self, stored_events: Sequence[StoredEvent]) -> Sequence[int]:
        append = _Append(stored_events)
        with self._queue_lock:
            self._queue.append(append)
            append.lead = not self._leading
            self._leading = True
        if not append.lead:
            append.wake.wait()  # settled by a leader, or handed the leadership
        if not append.done:
            self._lead(append)
        if append.error is not None:
            raise append.error
        return append.ids

    def _lead(self, own: _Append) -> None:
        """Commit queued groups until ``own`` is settled, then hand over to the next waiter."""
        while True:
            with self._queue_lock:
                group = self._queue[:MAX_GROUP]
                del self._queue[:MAX_GROUP]
            try:
                self._commit_group(group)
            except BaseException:  # interrupted (KeyboardInterrupt, SystemExit): never strand the queue
                self._hand_over()
                raise
            with self._queue_lock:
                if not self._queue:
                    self._leading = False
                    return
                if own.done:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.wake.set()
                    return

    def _hand_over(self) -> None:
        """Give the leadership to the first waiting append, or give it up if none waits."""
        with self._queue_lock:
            if self._queue:
                self._queue[0].lead = True
                self._queue[0].wake.set()
            else:
                self._leading = False

    def _commit_group(self, group: list[_Append]) -> None:
        """Write ``group`` in one transaction and settle every append in it.

        First all its events in one pipelined INSERT (the common case: no conflict); if that
        meets a conflict or a bad datum, again with a savepoint per append, so that only the
        appends at fault fail.
        """
        try:
            try:
                self._commit_together(group)
            except (IntegrityError, DataError):
                if len(group) == 1:
                    raise
                self._commit_with_savepoints(group)
        except PersistenceError as error:  # the whole transaction is gone: nobody committed
            for append in group:
                append.ids, append.error = [], append.error or error
        except Exception as error:  # noqa: BLE001 - handed to every waiting caller, re-raised there
            for append in group:
                append.ids, append.error = [], error
        finally:
            self.groups += 1
            self.appends += len(group)
            for append in group:
                append.done = True
                append.wake.set()

    def _commit_together(self, group: list[_Append]) -> None:
        """One pipelined transaction: lock, notify, one INSERT of every event, commit.

        The same statements as eventsourcing's ``insert_events`` (pipeline mode, the
        exception re-raised after the pipeline has exited); positions are handed back in
        the order the events were given. Raises PersistenceError subclasses.
        """
        rows = [row for append in group for row in self._rows(append)]
        error: Exception | None = None
        ids: list[int] = []
        with self.datastore.get_connection() as conn:
            with conn.pipeline() as pipeline, conn.transaction(), conn.cursor() as curs:
                try:
                    self._lock_table(curs)
                    self._notify_channel(curs)
                    curs.execute(self.insert_events_statement, (rows,), prepare=True)
                    pipeline.sync()
                    ids = [row["notification_id"] for row in curs.fetchall()]
                except Exception as e:  # noqa: BLE001 - re-raised once the pipeline has exited
                    error = e
            if error is not None:
                raise error
        for append in group:
            append.ids, ids = ids[: len(append.events)], ids[len(append.events) :]

    def _commit_with_savepoints(self, group: list[_Append]) -> None:
        """One transaction, one savepoint per append: a conflict or bad datum fails its own."""
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._lock_table(curs)
            self._notify_channel(curs)
            for append in group:
                self._insert_one(conn, curs, append)

    def _rows(self, append: _Append) -> list[Any]:
        """The append's events as the store's composite type, for ``unnest(%s)``."""
        return [self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state) for e in append.events]

    def _insert_one(self, conn: psycopg.Connection[Any], curs: psycopg.Cursor[Any], append: _Append) -> None:
        """Insert one append's events under a savepoint; a conflict or bad datum fails it alone."""
        rows = self._rows(append)
        try:
            with conn.transaction():  # a SAVEPOINT inside the group's transaction
                curs.execute(self.insert_events_statement, (rows,), prepare=True)
                append.ids = [row["notification_id"] for row in curs.fetchall()]
        except (psycopg.IntegrityError, psycopg.DataError) as error:
            append.ids, append.error = [], _persistence_error(error)
