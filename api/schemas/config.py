"""Settings, agents, providers, engines, the audit log, dead letters and webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from api.schemas.common import Accepted, UserRef
from api.schemas.enums import JobType


class SettingOut(BaseModel):
    """A setting: ``user`` null for a global one."""

    id: UUID
    key: str
    value: Any
    user: UUID | None
    created_at: datetime
    updated_at: datetime


class AgentOut(BaseModel):
    """A saved agent: default parameters (``configuration``) for jobs of ``type``."""

    id: UUID
    name: str
    description: str
    type: JobType
    status: Literal["active", "inactive"]
    configuration: dict[str, Any]
    provider: UUID | None
    created_by: UserRef
    created_at: datetime
    updated_at: datetime


class ProviderOut(BaseModel):
    """An AI provider; its API key is never answered (``has_api_key``)."""

    id: UUID
    name: str
    kind: Literal["local", "openai_compatible"]
    base_url: str | None
    has_api_key: bool
    enabled: bool
    created_at: datetime


class EngineOut(BaseModel):
    """What this installation can run for one job type (``missing``: what is not installed)."""

    type: JobType
    engine: str | None
    available: bool
    missing: list[str] | None = None
    languages: list[str]
    voices: list[str]


class AuditActor(BaseModel):
    """Who attempted a command (null fields: not authenticated)."""

    id: str | None
    username: str | None


class AuditEntry(BaseModel):
    """One command attempt."""

    at: datetime
    actor: AuditActor
    command: str
    target: str | None
    outcome: Literal["ok", "refused", "invalid", "conflict", "error"]
    status: int
    request_id: str | None


class DeadLetter(BaseModel):
    """A job that exhausted its attempts."""

    id: UUID
    job: UUID
    type: JobType
    code: str
    message: str
    attempts: int
    owner: UUID | None
    dead_lettered_at: datetime


class Redriven(BaseModel):
    """A re-driven dead letter: its job is pending again."""

    id: UUID
    status: Literal["pending"]
    position: int


class WebhookOut(BaseModel):
    """A webhook endpoint (its secret is answered only on create and rotation)."""

    id: UUID
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    """A new endpoint, with its signing secret (``whsec_…``), answered this once."""

    secret: str


class Secret(BaseModel):
    """A signing secret (``whsec_`` + base64)."""

    secret: str


class DeliveryAttempt(BaseModel):
    """One attempt of a delivery: ``status_code`` null when no answer came."""

    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float | None


class Delivery(BaseModel):
    """One event's delivery to one endpoint."""

    id: UUID
    event_id: str
    event_type: str
    position: int
    status: Literal["pending", "succeeded", "failed"]
    attempts: list[DeliveryAttempt]
    next_attempt_at: datetime | None
    created_at: datetime


class AcceptedWithSecret(Accepted):
    """A new webhook endpoint the read models have not shown yet (202), with its secret."""

    secret: str


class EffectiveSettings(BaseModel):
    """The settings in force for the caller: their own over global over defaults
    (sizes in MB of 1,048,576 bytes, durations in seconds); other keys the system keeps
    (``demo.seeded``) may appear too."""

    model_config = ConfigDict(extra="allow")

    max_file_size_mb: int
    max_concurrent_jobs: int
    default_language: str | None
    max_input_duration_s: float
