"""Closed vocabularies of the job: its status and its priority.

Both are ``StrEnum``\\ s, so a member equals its string (``JobStatus.RUNNING == "running"``)
and stored events, read-model rows and JSON that carry plain strings mix with them safely.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """Where a job is: pending → running → completed | failed | cancelled (a failed or
    cancelled job may go back to pending as its next attempt)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the job is done (completed, failed or cancelled)."""
        return self in FINISHED_STATUSES


#: The statuses a job ends in.
FINISHED_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
#: The statuses of open work (not finished).
OPEN_STATUSES: tuple[JobStatus, ...] = (JobStatus.PENDING, JobStatus.RUNNING)


class Priority(StrEnum):
    """How urgent a job is; :attr:`rank` orders them low < normal < high."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """0 for low, 1 for normal, 2 for high (``?ordering=priority`` sorts by it)."""
        return PRIORITY_RANK[self]

    @classmethod
    def rank_of(cls, value: str) -> int:
        """The rank of ``value`` (a priority's string); an unknown value ranks as normal."""
        return PRIORITY_RANK.get(value, PRIORITY_RANK[cls.NORMAL])


#: Each priority's rank: low 0, normal 1, high 2 (defined once; keys equal their strings).
PRIORITY_RANK: dict[str, int] = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2}

__all__ = ["FINISHED_STATUSES", "OPEN_STATUSES", "PRIORITY_RANK", "JobStatus", "Priority"]
