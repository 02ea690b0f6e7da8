"""Command types, named in the imperative. Each is handled by one method of
:class:`commands.service.Platform`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class CreateUser:
    """Create a user (no signup: admins, the CLI and the bootstrap admin only)."""

    username: str
    password: str
    role: str
    email: str | None = None


@dataclass(frozen=True)
class CreateProject:
    """Create a project owned by the acting user."""

    name: str
    description: str = ""


@dataclass(frozen=True)
class SubmitJob:
    """Submit a job; ``input_files`` maps a field to a stored blob's description."""

    project_id: UUID
    type: str
    parameters: dict[str, Any]
    input_files: dict[str, dict[str, Any]] = field(default_factory=dict)
    priority: str = "normal"


@dataclass(frozen=True)
class StartJob:
    """Claim a pending job at the version the processor saw (one claimer wins)."""

    job_id: UUID
    expected_version: int
    processor_id: str


@dataclass(frozen=True)
class UpdateProgress:
    """Report progress 0–100 and stage of a running job, with optional log lines."""

    job_id: UUID
    progress: int
    stage: str = ""
    logs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class AppendLogs:
    """Append a batch of ``{at, level, message}`` log lines to a running job."""

    job_id: UUID
    lines: list[dict[str, Any]]


@dataclass(frozen=True)
class CompleteJob:
    """Finish a running job with ``result`` ``{files, meta}``."""

    job_id: UUID
    result: dict[str, Any]
    processor_id: str | None = None


@dataclass(frozen=True)
class FailJob:
    """Fail a job with an error code and a message."""

    job_id: UUID
    code: str
    message: str


@dataclass(frozen=True)
class CancelJob:
    """Ask a job to stop (pending: cancelled at once; running: at its next checkpoint)."""

    job_id: UUID
    reason: str = "cancelled by user"


@dataclass(frozen=True)
class ConfirmCancellation:
    """A processor stopped a cancel-requested job's engine: record it cancelled."""

    job_id: UUID
    reason: str = "cancelled by user"
