"""What every read model shares: the :class:`ReadModel` base (a projection that declares
the events it handles, as eventsourcing's ``Projection`` declares its ``topics``) and the
two writes most of them make: insert a new row once, and update a row unless it already
includes an event (its ``position`` column), with the pure row fold beside each."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar

from sqlalchemy import Connection, Table, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from events import DomainEvent

#: A read-model row: ``{column: value}``.
Row = dict[str, Any]


class ReadModel:
    """One read model: applies the events in :attr:`handles` to its tables of one
    generation (``tables``, see :func:`projections.tables.generation`) within the caller's
    transaction. Subclasses define ``process_event`` as a ``singledispatchmethod`` with one
    method per event type; the SQL writes go through pure row functions of the module, so
    the rows can be checked without a database."""

    #: the event classes this read model applies (subclasses of them too)
    handles: ClassVar[tuple[type[DomainEvent], ...]] = ()
    #: whether it reads the jobs table while applying (then buffered job rows are written first)
    reads_jobs: ClassVar[bool] = False

    def __init__(self, tables: SimpleNamespace) -> None:
        self.t = tables

    def process_event(self, event: DomainEvent, conn: Connection, position: int) -> None:
        """Apply ``event``, stored at global ``position``, in ``conn``'s transaction."""
        raise NotImplementedError

    def begin_batch(self) -> None:
        """From now on :meth:`process_event` may buffer its writes until :meth:`flush`."""

    def buffers(self, event: DomainEvent) -> bool:
        """Whether a write about ``event``'s aggregate waits in the buffer."""
        return False

    def flush(self, conn: Connection) -> None:
        """Write what the buffer holds, in ``conn``'s transaction."""

    def end_batch(self, conn: Connection | None) -> None:
        """Flush into ``conn`` (None: discard the buffer, the batch failed) and write
        each event at once again."""


def touched(row: Row, event: DomainEvent, position: int, changes: Row) -> Row:
    """``row`` after ``changes`` by ``event`` (at ``position``), or ``row`` itself when it
    already includes ``position``: the pure twin of :func:`touch`."""
    if row["position"] >= position:
        return row
    return {**row, **changes, "updated_at": event.timestamp, "position": position}


def touch(conn: Connection, table: Table, event: DomainEvent, position: int, changes: Row) -> None:
    """Update the row of ``event``'s aggregate with ``changes`` unless it already includes
    ``position`` (see :func:`touched`)."""
    conn.execute(
        update(table)
        .where(table.c.id == str(event.originator_id), table.c.position < position)
        .values(updated_at=event.timestamp, position=position, **changes)
    )


def insert_new(conn: Connection, table: Table, row: Row | list[Row]) -> None:
    """Insert ``row`` (or rows) unless its key is already there (a replay)."""
    if row:
        conn.execute(pg_insert(table).values(row).on_conflict_do_nothing())


__all__ = ["ReadModel", "Row", "insert_new", "touch", "touched"]
