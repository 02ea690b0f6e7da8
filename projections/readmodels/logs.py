"""The job logs read model (``rm_job_logs``): every logged line, keyed by (position, seq)."""

from __future__ import annotations

from datetime import datetime
from functools import singledispatchmethod
from typing import Any

from sqlalchemy import Connection

from events import DomainEvent, JobLogsAppended
from projections.readmodels.base import ReadModel, Row, insert_new

#: log rows per INSERT statement (6 parameters each, far below PostgreSQL's 65,535)
ROWS_PER_INSERT = 2_000


def log_rows(event: JobLogsAppended, position: int) -> list[Row]:
    """The rows of a batch of lines ``{at (ISO 8601), level?, message}``; level defaults to
    ``info``. Raises KeyError / ValueError for a line without a message or a valid time."""
    return [
        {
            "job_id": str(event.originator_id),
            "position": position,
            "seq": i,
            "at": datetime.fromisoformat(line["at"]),
            "level": line.get("level", "info"),
            "message": line["message"],
        }
        for i, line in enumerate(event.lines)
    ]


class LogsProjection(ReadModel):
    """``rm_job_logs``: what ``/api/jobs/{id}/logs/`` pages through. Within a batch the
    lines of every event are inserted together, :data:`ROWS_PER_INSERT` at a time."""

    handles = (JobLogsAppended,)

    def __init__(self, tables: Any) -> None:
        super().__init__(tables)
        self._rows: list[Row] | None = None

    @singledispatchmethod
    def process_event(self, event: DomainEvent, conn: Connection, position: int) -> None:
        """Other events log nothing."""

    @process_event.register
    def _(self, event: JobLogsAppended, conn: Connection, position: int) -> None:
        rows = log_rows(event, position)
        if self._rows is None:
            insert_new(conn, self.t.job_logs, rows)
        else:
            self._rows += rows

    def begin_batch(self) -> None:
        """Collect the batch's lines until :meth:`flush`."""
        self._rows = []

    def flush(self, conn: Connection) -> None:
        """Insert the collected lines (those already there are left: a replay)."""
        rows, self._rows = self._rows or [], [] if self._rows is not None else None
        for start in range(0, len(rows), ROWS_PER_INSERT):
            insert_new(conn, self.t.job_logs, rows[start : start + ROWS_PER_INSERT])

    def end_batch(self, conn: Connection | None) -> None:
        """Flush into ``conn`` (None: discard), then insert each event's lines at once again."""
        if conn is not None:
            self.flush(conn)
        self._rows = None


__all__ = ["LogsProjection", "log_rows"]
