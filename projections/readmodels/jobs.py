"""The jobs read model (``rm_jobs``): each row is :func:`projections.readmodels.job_row.job_row`
of the job's events, written without reading the row first.

Within a batch (:meth:`JobsProjection.begin_batch`) a job's events are merged into one
write: a job submitted in the batch is inserted once, folded to its last event; a job
submitted before gets one update holding the merged :func:`job_changes` of its events, sent
with the other updates of the same columns in one ``executemany``."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import singledispatchmethod
from typing import Any

from sqlalchemy import Connection, bindparam, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from events import DomainEvent, JobSubmitted
from projections.readmodels.base import ReadModel, Row, insert_new
from projections.readmodels.job_row import JOB_EVENTS, JobRow, job_changes, job_row


@dataclass
class _Merged:
    """A batch's writes to one job row: the whole ``row`` (submitted in the batch) or
    ``changes`` of an existing row from the event of version ``first`` on."""

    first: int
    row: JobRow | None = None
    changes: Row = field(default_factory=dict)


class JobsProjection(ReadModel):
    """``rm_jobs``: one row per job. A row is only moved by an event of a later version
    (``version`` guards replays)."""

    handles = JOB_EVENTS

    def __init__(self, tables: Any) -> None:
        super().__init__(tables)
        self._batch: dict[str, _Merged] | None = None

    @singledispatchmethod
    def process_event(self, event: DomainEvent, conn: Connection, position: int) -> None:
        """Every job event after submission: its :func:`job_changes` at its version."""
        values = {"updated_at": event.timestamp, "version": event.originator_version, "position": position}
        values.update(job_changes(event))
        key = str(event.originator_id)
        if self._batch is None:
            jobs = self.t.jobs
            conn.execute(update(jobs).where(jobs.c.id == key, jobs.c.version < event.originator_version).values(**values))
            return
        merged = self._batch.setdefault(key, _Merged(first=event.originator_version))
        if merged.row is not None:
            merged.row = job_row(merged.row, event, position)
        else:
            merged.changes.update(values)

    @process_event.register
    def _(self, event: JobSubmitted, conn: Connection, position: int) -> None:
        row = JobRow.submitted(event, position)
        if self._batch is None:
            insert_new(conn, self.t.jobs, row.as_dict())
        else:
            self._batch[row.id] = _Merged(first=row.version, row=row)

    def begin_batch(self) -> None:
        """Merge each job's writes until :meth:`flush`."""
        self._batch = {}

    def buffers(self, event: DomainEvent) -> bool:
        """Whether writes to ``event``'s job wait in the batch."""
        return self._batch is not None and str(event.originator_id) in self._batch

    def flush(self, conn: Connection) -> None:
        """Insert the jobs submitted in the batch (each at its last event) and update the
        others, one ``executemany`` per set of changed columns."""
        if not self._batch:
            return
        jobs = self.t.jobs
        inserts = [m.row.as_dict() for m in self._batch.values() if m.row is not None]
        groups: dict[tuple[str, ...], list[Row]] = {}
        for key, merged in self._batch.items():
            if merged.row is None:
                params = {f"v_{k}": v for k, v in merged.changes.items()}
                groups.setdefault(tuple(sorted(merged.changes)), []).append({"k_id": key, "k_first": merged.first, **params})
        self._batch.clear()
        if inserts:
            conn.execute(pg_insert(jobs).on_conflict_do_nothing(), inserts)
        for columns, rows in groups.items():
            stmt = (
                update(jobs)
                .where(jobs.c.id == bindparam("k_id"), jobs.c.version < bindparam("k_first"))
                .values({c: bindparam(f"v_{c}") for c in columns})
            )
            conn.execute(stmt, rows)

    def end_batch(self, conn: Connection | None) -> None:
        """Flush into ``conn`` (None: discard), then write each event at once again."""
        if conn is not None:
            self.flush(conn)
        self._batch = None


__all__ = ["JobsProjection"]
