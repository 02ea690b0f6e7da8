"""Reading one aggregate's history from the event store, a page at a time.

The store's events table (eventsourcing's PostgreSQL recorder: ``notification_id``,
``originator_id``, ``originator_version``, ``topic``, ``state``) is read in SQL bounded by
global position, version or time, so only the rows asked for are fetched and decoded:
a history page decodes one page, ``?as_of=`` the job's events up to then.
"""

from __future__ import annotations

import bisect
import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification
from sqlalchemy import Engine, text

from events import DomainEvent, JobSubmitted
from projections.readmodels.job_row import JobRow, fold_job, job_row

#: ``(global position, domain event)``
Entry = tuple[int, DomainEvent]
#: A plain-JSON state starts with the event's time (eventsourcing's JSON transcoder).
_TIME_PATTERN = r'^\{"timestamp":\{"_type_":"datetime_iso","_data_":"([^"]+)"'


class StoreHistory:
    """One aggregate's stored events, read by SQL on the store's events table.

    Args:
        engine: an engine on the store's database.
        events_table: the recorder's events table (``recorder.events_table_name``).
        decode: a stored notification → its domain event (``mapper.to_domain_event``).
        plain_json: states are uncompressed, unencrypted JSON (then times are bounded in
            SQL; otherwise :meth:`version_at_time` decodes the aggregate's events).
    """

    def __init__(
        self, engine: Engine, events_table: str, decode: Callable[[Notification], Any], *, plain_json: bool = True
    ) -> None:
        self.engine, self.decode, self.plain_json = engine, decode, plain_json
        self._table = '"' + events_table.replace('"', '""') + '"'

    @classmethod
    def of_store(cls, engine: Engine, recorder: Any, mapper: Any) -> StoreHistory:
        """The reader of an eventsourcing application's store (its recorder and mapper)."""
        plain = getattr(mapper, "compressor", None) is None and getattr(mapper, "cipher", None) is None
        return cls(engine, recorder.events_table_name, mapper.to_domain_event, plain_json=plain)

    def _rows(self, where: str, params: dict[str, Any], tail: str = "") -> list[Entry]:
        sql = (
            f"SELECT notification_id, originator_id, originator_version, topic, state FROM {self._table} "
            f"WHERE originator_id = :id AND {where} ORDER BY originator_version {tail}"
        )
        with self.engine.connect() as conn:
            rows = conn.execute(text(sql), params).all()
        return [
            (
                row.notification_id,
                self.decode(
                    Notification(
                        id=row.notification_id,
                        originator_id=row.originator_id,
                        originator_version=row.originator_version,
                        topic=row.topic,
                        state=bytes(row.state),
                    )
                ),
            )
            for row in rows
        ]

    def page(self, aggregate_id: UUID | str, *, after: int = 0, limit: int = 500, offset: int = 0) -> list[Entry]:
        """At most ``limit`` events after global position ``after`` (skipping the first
        ``offset`` of them), in order: keyset paging by position (the next page is
        ``after=`` the last position of this one)."""
        return self._rows(
            "notification_id > :after",
            {"id": UUID(str(aggregate_id)), "after": after, "limit": limit, "offset": offset},
            "LIMIT :limit OFFSET :offset",
        )

    def count(self, aggregate_id: UUID | str, *, after: int = 0) -> int:
        """How many events of the aggregate are stored after global position ``after``."""
        sql = f"SELECT count(*) FROM {self._table} WHERE originator_id = :id AND notification_id > :after"
        with self.engine.connect() as conn:
            return int(conn.execute(text(sql), {"id": UUID(str(aggregate_id)), "after": after}).scalar_one())

    def walk(self, aggregate_id: UUID | str, *, after: int = 0, upto: int | None = None, batch: int = 500) -> Iterator[Entry]:
        """Every event after ``after`` (and at most at position ``upto``), in order, read
        ``batch`` at a time."""
        while page := self.page(aggregate_id, after=after, limit=batch):
            for position, event in page:
                if upto is not None and position > upto:
                    return
                yield position, event
            if len(page) < batch:
                return
            after = page[-1][0]

    def upto_version(self, aggregate_id: UUID | str, version: int, *, after_version: int = 0) -> list[Entry]:
        """The aggregate's events of versions ``after_version`` + 1 to ``version``, in order."""
        return self._rows(
            "originator_version > :after AND originator_version <= :version",
            {"id": UUID(str(aggregate_id)), "after": after_version, "version": version},
        )

    def version_at(self, aggregate_id: UUID | str, position: int) -> int:
        """The aggregate's version right after global position ``position`` (0: none yet)."""
        sql = f"SELECT max(originator_version) FROM {self._table} WHERE originator_id = :id AND notification_id <= :p"
        with self.engine.connect() as conn:
            return int(conn.execute(text(sql), {"id": UUID(str(aggregate_id)), "p": position}).scalar() or 0)

    def version_at_time(self, aggregate_id: UUID | str, when: datetime) -> int:
        """The latest version of the aggregate whose event occurred at or before ``when``
        (an aware datetime; 0: none). With plain JSON states the times are read in SQL."""
        if self.plain_json:
            sql = (
                f"SELECT max(originator_version) FILTER (WHERE t <= :when), count(*) FILTER (WHERE t IS NULL) FROM "
                f"(SELECT originator_version, substring(convert_from(state, 'UTF8') from :pattern)::timestamptz AS t "
                f"FROM {self._table} WHERE originator_id = :id) AS events"
            )
            params = {"id": UUID(str(aggregate_id)), "when": when, "pattern": _TIME_PATTERN}
            with self.engine.connect() as conn:
                version, unknown = conn.execute(text(sql), params).one()
            if not unknown:
                return int(version or 0)
        return max((e.originator_version for _, e in self.walk(aggregate_id) if e.timestamp <= when), default=0)

    def job_at(self, job_id: UUID | str, version: int) -> JobRow:
        """The job row right after its event of ``version`` (:func:`job_row` over its
        stored events). Raises LookupError when the job has no such event."""
        row = fold_job(self.upto_version(job_id, version))
        if row is None or row.version != version:
            raise LookupError(f"job {job_id} has no event of version {version}")
        return row


class JobCheckpoints:
    """Job rows at every ``every``-th version, remembered in memory as jobs are folded, so
    that a job's row as of a version (``?as_of=``) folds at most ``every`` - 1 events after
    the nearest checkpoint instead of the job's whole history — eventsourcing's snapshots,
    kept per process and made on reading. A checkpoint never goes stale: stored events
    never change and :func:`job_row` is pure. Keeps the checkpoints of ``jobs`` jobs
    (least recently read dropped first); thread-safe.
    """

    def __init__(self, every: int = 50, jobs: int = 1_000) -> None:
        self.every, self.jobs = every, jobs
        self._marks: OrderedDict[str, list[JobRow]] = OrderedDict()
        self._lock = threading.Lock()

    def job_at(self, history: StoreHistory, job_id: UUID | str, version: int) -> JobRow:
        """The job row right after its event of ``version`` (a copy: the caller may change
        its nested values). Reads the events after the nearest checkpoint at or below
        ``version`` from ``history``. Raises LookupError when the job has no such event."""
        key = str(job_id)
        start = self._nearest(key, version)
        row = start
        if start is None or start.version < version:
            after = start.version if start is not None else 0
            for position, event in history.upto_version(job_id, version, after_version=after):
                row = job_row(row, event, position)
                if row.version % self.every == 0:
                    self._remember(key, row)
        if row is None or row.version != version:
            raise LookupError(f"job {job_id} has no event of version {version}")
        return copy.deepcopy(row)

    def _nearest(self, key: str, version: int) -> JobRow | None:
        with self._lock:
            marks = self._marks.get(key)
            if not marks:
                return None
            self._marks.move_to_end(key)
            i = bisect.bisect_right([m.version for m in marks], version)
            return marks[i - 1] if i else None

    def _remember(self, key: str, row: JobRow) -> None:
        with self._lock:
            marks = self._marks.setdefault(key, [])
            self._marks.move_to_end(key)
            versions = [m.version for m in marks]
            i = bisect.bisect_left(versions, row.version)
            if i == len(marks) or marks[i].version != row.version:
                marks.insert(i, row)
            while len(self._marks) > self.jobs:
                self._marks.popitem(last=False)


class JobRows:
    """The job row right after each event a follower sees, without re-reading the store
    while it sees a job's events one after another: the cached row moved one event on,
    else folded from the store up to that event's version. Keeps ``size`` jobs."""

    def __init__(self, history: StoreHistory, size: int = 10_000) -> None:
        self.history, self.size = history, size
        self._rows: OrderedDict[str, JobRow] = OrderedDict()

    def keep(self, row: JobRow) -> None:
        """Remember ``row`` as its job's latest (e.g. the read model's row at an event's
        version), so that the job's next events fold forward from it."""
        self._remember(row.id, row)

    def after(self, event: DomainEvent, position: int = 0) -> JobRow:
        """The row of ``event``'s job right after it (``position``: where it is stored).
        Raises LookupError when the store lacks the job's earlier events."""
        key = str(event.originator_id)
        cached = self._rows.get(key)
        if isinstance(event, JobSubmitted):
            row = job_row(None, event, position)
        elif cached is not None and cached.version == event.originator_version - 1:
            row = job_row(cached, event, position)
        else:
            row = self.history.job_at(event.originator_id, event.originator_version)
        self._remember(key, row)
        return row

    def _remember(self, key: str, row: JobRow) -> None:
        self._rows[key] = row
        self._rows.move_to_end(key)
        while len(self._rows) > self.size:
            self._rows.popitem(last=False)


__all__ = ["Entry", "JobCheckpoints", "JobRows", "StoreHistory"]
