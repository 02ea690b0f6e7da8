"""The job row: one pure fold of a job's events into the columns of ``rm_jobs``.

:func:`job_row` is the only place that knows how an event moves a job's row. The jobs
projection writes what it computes (:func:`job_changes` is the part an event sets, so the
projection needs no read), ``?as_of=`` and the live feed fold a job's stored events with it,
the webhook dispatcher renders jobs with it, and ``aiorch audit verify`` compares its output
with the row the projector wrote. No I/O here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import singledispatch
from typing import Any

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
)
from events.enums import JobStatus

#: The job events :func:`job_row` folds (every event of the Job aggregate).
JOB_EVENTS: tuple[type[DomainEvent], ...] = (
    JobSubmitted,
    JobStarted,
    JobProgressed,
    JobLogsAppended,
    JobCompleted,
    JobFailed,
    JobCancelRequested,
    JobCancelled,
    JobUpdated,
    JobRetried,
    JobArchived,
    JobDeadLettered,
)


@dataclass(frozen=True, slots=True)
class JobRow:
    """One row of ``rm_jobs``: the job right after its event of ``version``, stored at
    global ``position`` (0 when the fold was not told). Times are aware datetimes;
    ``error`` is ``{code, message}`` or None; ``priority`` is a :class:`events.enums.Priority`
    value (a plain string as the event stored it)."""

    id: str
    project_id: str
    type: str
    status: JobStatus
    progress: int
    stage: str
    priority: str
    attempt: int
    parameters: dict[str, Any]
    agent_id: str | None
    input_files: dict[str, Any]
    created_by_id: str
    created_by_username: str | None
    processor_id: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: dict[str, Any] | None
    has_result: bool
    cancel_requested: bool
    archived: bool
    demo: bool
    version: int
    position: int = 0

    @classmethod
    def submitted(cls, event: JobSubmitted, position: int = 0) -> JobRow:
        """The row of a job just submitted: pending, queued, attempt 1."""
        return cls(
            id=str(event.originator_id),
            project_id=event.project_id,
            type=event.type,
            status=JobStatus.PENDING,
            progress=0,
            stage="queued",
            priority=event.priority,
            attempt=1,
            parameters=event.parameters,
            agent_id=event.agent_id,
            input_files=event.input_files,
            created_by_id=event.owner_id,
            created_by_username=event.actor.get("username"),
            processor_id=None,
            created_at=event.timestamp,
            updated_at=event.timestamp,
            started_at=None,
            finished_at=None,
            error=None,
            has_result=False,
            cancel_requested=False,
            archived=False,
            demo=event.demo,
            version=event.originator_version,
            position=position,
        )

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> JobRow:
        """The row of a read-model mapping (an ``rm_jobs`` row: every column named here).
        Raises KeyError for a missing column."""
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})

    def replace(self, **changes: Any) -> JobRow:
        """A copy with ``changes`` (column → value). Raises TypeError for an unknown column."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """``{column: value}`` (shallow: nested dicts are the row's own)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@singledispatch
def job_changes(event: DomainEvent) -> dict[str, Any]:
    """The columns ``event`` sets on an existing job row, besides ``updated_at``,
    ``version`` and ``position`` (which every job event moves). They never depend on the
    previous row, so the projection can write them without reading it.

    Raises:
        TypeError: ``event`` is not a job event after submission.
    """
    raise TypeError(f"{type(event).__name__} is not an event that changes a job row")


@job_changes.register
def _(event: JobUpdated) -> dict[str, Any]:
    return dict(event.changes)


@job_changes.register
def _(event: JobRetried) -> dict[str, Any]:
    return {
        "status": JobStatus.PENDING,
        "attempt": event.attempt,
        "progress": 0,
        "stage": "queued",
        "processor_id": None,
        "started_at": None,
        "finished_at": None,
        "error": None,
        "has_result": False,
        "cancel_requested": False,
    }


@job_changes.register
def _(event: JobDeadLettered | JobLogsAppended) -> dict[str, Any]:
    return {}


@job_changes.register
def _(event: JobArchived) -> dict[str, Any]:
    return {"archived": True}


@job_changes.register
def _(event: JobStarted) -> dict[str, Any]:
    return {
        "status": JobStatus.RUNNING,
        "stage": "started",
        "attempt": event.attempt,
        "processor_id": event.processor_id,
        "started_at": event.timestamp,
        "cancel_requested": False,
    }


@job_changes.register
def _(event: JobProgressed) -> dict[str, Any]:
    return {"progress": event.progress, "stage": event.stage}


@job_changes.register
def _(event: JobCompleted) -> dict[str, Any]:
    return {"status": JobStatus.COMPLETED, "progress": 100, "stage": "done", "finished_at": event.timestamp, "has_result": True}


def _ended(status: JobStatus, event: DomainEvent, code: str, message: str) -> dict[str, Any]:
    """The columns of a job that ended in ``status`` (failed or cancelled) at ``event``:
    the stage names the status, the error is ``{code, message}``."""
    return {"status": status, "stage": status.value, "finished_at": event.timestamp, "error": {"code": code, "message": message}}


@job_changes.register
def _(event: JobFailed) -> dict[str, Any]:
    return _ended(JobStatus.FAILED, event, event.code, event.message)


@job_changes.register
def _(event: JobCancelRequested) -> dict[str, Any]:
    return {"cancel_requested": True}


@job_changes.register
def _(event: JobCancelled) -> dict[str, Any]:
    return {**_ended(JobStatus.CANCELLED, event, "cancelled", event.reason), "cancel_requested": True}


def job_row(previous: JobRow | None, event: DomainEvent, position: int = 0) -> JobRow:
    """The job row right after ``event`` (stored at global ``position``), from the row
    right before it (None before ``JobSubmitted``). Pure.

    Raises:
        ValueError: a later event with no previous row, or ``JobSubmitted`` with one.
        TypeError: ``event`` is no job event, or changes an unknown column.
    """
    if isinstance(event, JobSubmitted):
        if previous is not None:
            raise ValueError(f"job {event.originator_id} was already submitted")
        return JobRow.submitted(event, position)
    if previous is None:
        raise ValueError(f"{type(event).__name__} of job {event.originator_id} before its JobSubmitted")
    return previous.replace(**job_changes(event), updated_at=event.timestamp, version=event.originator_version, position=position)


def fold_job(events: Iterable[tuple[int, DomainEvent]]) -> JobRow | None:
    """The row after ``(position, event)`` pairs of one job, in order (None when empty)."""
    row: JobRow | None = None
    for position, event in events:
        row = job_row(row, event, position)
    return row


__all__ = ["JOB_EVENTS", "JobRow", "fold_job", "job_changes", "job_row"]
