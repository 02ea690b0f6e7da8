"""Domain events: past-tense classes with their fields and schema versions, and the JSON
envelope that carries them to Kafka and to the ``/ws/events/`` feed.

This package imports nothing of ours (see ARCHITECTURE.md, *Where things live*).
"""

from __future__ import annotations

from events.base import DomainEvent
from events.envelope import event_type, to_envelope
from events.jobs import (
    JOB_TYPES,
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
from events.projects import ProjectArchived, ProjectCreated, ProjectUpdated
from events.users import (
    ROLES,
    UserCreated,
    UserDeactivated,
    UserLoggedOut,
    UserPasswordChanged,
    UserReactivated,
    UserUpdated,
)

__all__ = [
    "JOB_TYPES",
    "ROLES",
    "DomainEvent",
    "JobArchived",
    "JobCancelRequested",
    "JobCancelled",
    "JobCompleted",
    "JobDeadLettered",
    "JobFailed",
    "JobLogsAppended",
    "JobProgressed",
    "JobRetried",
    "JobStarted",
    "JobSubmitted",
    "JobUpdated",
    "ProjectArchived",
    "ProjectCreated",
    "ProjectUpdated",
    "UserCreated",
    "UserDeactivated",
    "UserLoggedOut",
    "UserPasswordChanged",
    "UserReactivated",
    "UserUpdated",
    "event_type",
    "to_envelope",
]
