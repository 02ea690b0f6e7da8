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
    agent_id: UUID | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook: str | None = None
    webhook_events: list[str] | None = None


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
    attempt: int | None = None


@dataclass(frozen=True)
class EndAttempt:
    """A running attempt ended in error: retried (retryable, attempts left, after backoff)
    or failed for good and dead-lettered. ``processor_id``/``attempt`` guard against a
    late report from a processor that lost the job."""

    job_id: UUID
    code: str
    message: str
    retryable: bool
    processor_id: str | None = None
    attempt: int | None = None


@dataclass(frozen=True)
class ReleaseJob:
    """A processor hands its running job back (graceful shutdown): pending, same attempt."""

    job_id: UUID
    processor_id: str
    reason: str = "handed back by a stopping processor"


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


# -- users ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdateUser:
    """Change a user's email and/or role (role: admins only). ``management``: sent through
    user management (``/api/users/``), which is admins' only even for one's own email."""

    user_id: UUID
    email: str | None = None
    role: str | None = None
    management: bool = False


@dataclass(frozen=True)
class DeactivateUser:
    """Stop a user from logging in; their tokens stop working."""

    user_id: UUID


@dataclass(frozen=True)
class ReactivateUser:
    """Let a deactivated user log in again."""

    user_id: UUID


@dataclass(frozen=True)
class ChangePassword:
    """A user changes their own password; other sessions stop working."""

    old_password: str
    new_password: str
    kept_session: str | None = None


@dataclass(frozen=True)
class ResetPassword:
    """An admin sets a user's password; every session of theirs stops working."""

    user_id: UUID
    new_password: str


@dataclass(frozen=True)
class LogOut:
    """Revoke the session (refresh token id) of the acting user."""

    session: str


# -- projects and jobs -------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdateProject:
    """Change a project's name and/or description."""

    project_id: UUID
    name: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class ArchiveProject:
    """Archive a project: pending jobs are cancelled, running ones asked to stop."""

    project_id: UUID


@dataclass(frozen=True)
class UpdateJob:
    """Edit a pending job's parameters and/or priority."""

    job_id: UUID
    parameters: dict[str, Any] | None = None
    priority: str | None = None


@dataclass(frozen=True)
class RetryJob:
    """Send a failed or cancelled job back to pending as its next attempt."""

    job_id: UUID
    reason: str = "retried by user"


@dataclass(frozen=True)
class ArchiveJob:
    """Hide a job from lists (a pending or running one is cancelled first)."""

    job_id: UUID


# -- settings, agents, providers -----------------------------------------------------------------


@dataclass(frozen=True)
class SetSetting:
    """Create or change setting ``key`` of ``user_id`` (None: global, admins only)."""

    key: str
    value: Any
    user_id: str | None = None


@dataclass(frozen=True)
class ChangeSetting:
    """Give the setting ``setting_id`` a new value (its key and user stay)."""

    setting_id: UUID
    value: Any


@dataclass(frozen=True)
class DeleteSetting:
    """Remove a setting by id."""

    setting_id: UUID


@dataclass(frozen=True)
class CreateAgent:
    """Save an AI agent: default parameters (``configuration``) for jobs of ``type``."""

    name: str
    type: str
    configuration: dict[str, Any]
    description: str = ""
    provider_id: UUID | None = None


@dataclass(frozen=True)
class UpdateAgent:
    """Change an agent's name, description, configuration or provider."""

    agent_id: UUID
    changes: dict[str, Any]


@dataclass(frozen=True)
class SetAgentStatus:
    """Activate (``active=True``) or deactivate an agent."""

    agent_id: UUID
    active: bool


@dataclass(frozen=True)
class DeleteAgent:
    """Remove an agent."""

    agent_id: UUID


@dataclass(frozen=True)
class CreateProvider:
    """Register an AI provider (admins); ``api_key`` is encrypted before it is stored."""

    name: str
    kind: str
    base_url: str | None = None
    api_key: str | None = None
    enabled: bool = True


@dataclass(frozen=True)
class UpdateProvider:
    """Change a provider; ``api_key`` (if given) is encrypted before it is stored."""

    provider_id: UUID
    changes: dict[str, Any]


@dataclass(frozen=True)
class DeleteProvider:
    """Remove a provider."""

    provider_id: UUID
