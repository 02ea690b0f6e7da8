"""Domain events: past-tense classes with their fields and schema versions, and the JSON
envelope that carries them to Kafka and to the ``/ws/events/`` feed.

This package imports nothing of ours (see ARCHITECTURE.md, *Where things live*).
"""

from __future__ import annotations

from events.base import DomainEvent
from events.envelope import event_type, to_envelope
from events.jobs import (
    JOB_TYPES,
    JobCancelled,
    JobCancelRequested,
    JobCompleted,
    JobFailed,
    JobLogsAppended,
    JobProgressed,
    JobStarted,
    JobSubmitted,
)
from events.projects import ProjectCreated
from events.users import ROLES, UserCreated

__all__ = [
    "JOB_TYPES",
    "ROLES",
    "DomainEvent",
    "JobCancelRequested",
    "JobCancelled",
    "JobCompleted",
    "JobFailed",
    "JobLogsAppended",
    "JobProgressed",
    "JobStarted",
    "JobSubmitted",
    "ProjectCreated",
    "UserCreated",
    "event_type",
    "to_envelope",
]
