"""``aiorch audit verify``: re-fold every job, project and user from the event store and
report each read-model row that differs from its fold. The folds are the read side's own
pure ones (:func:`projections.readmodels.job_row.job_row`, ``project_row``, ``user_row``)
over the stored events, made storable as the projector makes them, so the row the projector
wrote must equal the fold column for column."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, select

from infra.bootstrap import System
from projections import tables as t
from projections.history import StoreHistory
from projections.readmodels.job_row import fold_job
from projections.readmodels.projects import ProjectsProjection, project_row
from projections.readmodels.users import UsersProjection, user_row
from projections.sanitize import sanitize_event

#: the first event's class name → what its aggregate is called
FIRST_EVENTS = {"JobSubmitted": "job", "ProjectCreated": "project", "UserCreated": "user"}
_TABLES = {"job": t.jobs, "project": t.projects, "user": t.users}
#: columns other aggregates' events move, so their own fold does not know them
_UNFOLDED = frozenset({"jobs_count", "owner_username"})


def aggregate_ids(system: System) -> Iterator[tuple[str, Any]]:
    """``(kind, id)`` of every job, project and user in the store (``kind`` ``job``,
    ``project`` or ``user``; from each one's first event)."""
    start = 0
    while batch := system.platform.recorder.select_notifications(start, 1000, inclusive_of_start=False):
        for n in batch:
            kind = FIRST_EVENTS.get(n.topic.rsplit(".", 1)[-1])
            if kind is not None and n.originator_version == 1:
                yield kind, n.originator_id
        start = batch[-1].id


def folded(history: StoreHistory, kind: str, aggregate_id: Any) -> dict[str, Any] | None:
    """The read-model row ``kind`` ``aggregate_id`` should have, folded from its stored
    events (made storable as the projector makes them) with the read model's own pure
    fold; None when it has no stored event. Columns that other aggregates' events move
    (a project's ``jobs_count``, owners' names) are left out."""
    events = ((p, sanitize_event(e)) for p, e in history.walk(aggregate_id))
    if kind == "job":
        job = fold_job(events)
        return job.as_dict() if job is not None else None
    handles, fold = (UsersProjection.handles, user_row) if kind == "user" else (ProjectsProjection.handles, project_row)
    row: dict[str, Any] | None = None
    for position, event in events:
        if isinstance(event, handles):
            row = fold(row, event, position)
    return {k: v for k, v in row.items() if k not in _UNFOLDED} if row is not None else None


def differences(what: str, expected: Mapping[str, Any], row: Mapping[Any, Any]) -> list[str]:
    """One line per column of ``row`` that differs from ``expected`` (columns only one of
    them has are not compared)."""
    return [
        f"{what}: {field} is {row[field]!r} in the read model, {_plain(value)!r} in the store"
        for field, value in expected.items()
        if field in row and row[field] != value
    ]


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, StrEnum) else value


def verify(system: System, progress: Callable[[int], None] | None = None) -> list[str]:
    """Differences between each aggregate's fold and its read-model row, one line each;
    ``progress(n)`` is told every 100 aggregates checked and once at the end."""
    problems: list[str] = []
    checked = 0
    history = StoreHistory.of_store(system.engine, system.platform.recorder, system.platform.mapper)
    with system.engine.connect() as conn:
        for kind, aggregate_id in aggregate_ids(system):
            problems += _check(history, conn, kind, aggregate_id)
            checked += 1
            if progress and checked % 100 == 0:
                progress(checked)
    if progress:
        progress(checked)
    return problems


def _check(history: StoreHistory, conn: Connection, kind: str, aggregate_id: Any) -> list[str]:
    table, what = _TABLES[kind], f"{kind} {aggregate_id}"
    row = conn.execute(select(table).where(table.c.id == str(aggregate_id))).mappings().first()
    if row is None:
        return [f"{what}: missing from the read model"]
    expected = folded(history, kind, aggregate_id)
    if expected is None:
        return [f"{what}: no events in the store"]
    return differences(what, expected, row)
