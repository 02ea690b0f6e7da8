"""``aiorch audit verify``: re-fold every aggregate from the event store and report each
read-model row that differs from its fold."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import select

from commands.job import Job
from commands.project import Project
from commands.user import User
from infra.bootstrap import System
from projections import tables as t

_CHECKED: dict[type, tuple[Any, str]] = {Job: (t.jobs, "job"), Project: (t.projects, "project"), User: (t.users, "user")}


def aggregate_ids(system: System) -> Iterator[tuple[type, Any]]:
    """``(aggregate class, id)`` of every Job, Project and User in the store (from each one's
    first event)."""
    start = 0
    suffixes = {"JobSubmitted": Job, "ProjectCreated": Project, "UserCreated": User}
    while batch := system.platform.recorder.select_notifications(start, 1000, inclusive_of_start=False):
        for n in batch:
            cls = suffixes.get(n.topic.rsplit(".", 1)[-1])
            if cls is not None and n.originator_version == 1:
                yield cls, n.originator_id
        start = batch[-1].id


def verify(system: System, progress: Callable[[int], None] | None = None) -> list[str]:
    """Differences between each aggregate's fold and its read-model row, one line each."""
    problems: list[str] = []
    checked = 0
    with system.engine.connect() as conn:
        for cls, aggregate_id in aggregate_ids(system):
            table, what = _CHECKED[cls]
            folded: dict[str, Any] = system.platform.repository.get(aggregate_id).state()
            row = conn.execute(select(table).where(table.c.id == str(aggregate_id))).mappings().first()
            checked += 1
            if progress and checked % 100 == 0:
                progress(checked)
            if row is None:
                problems.append(f"{what} {aggregate_id}: missing from the read model")
                continue
            for field, value in folded.items():
                if field in row and row[field] != value:
                    problems.append(f"{what} {aggregate_id}: {field} is {row[field]!r} in the read model, {value!r} in the store")
    if progress:
        progress(checked)
    return problems
