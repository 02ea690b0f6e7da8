"""Projects, jobs, their results, logs and history (as the read models show them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, field_validator

from api.schemas.common import UserRef
from api.schemas.enums import JobStatus, JobType, Priority
from commands.text import Line, Text


class ProjectIn(BaseModel):
    """A new project. Text follows :mod:`commands.text`'s rule (422 naming the field)."""

    name: Line = Field(min_length=1, max_length=200, examples=["Podcast season 2"])
    description: Text = Field(default="", max_length=10_000)


class ProjectOut(BaseModel):
    """A project as the read model shows it."""

    id: UUID
    name: str
    description: str
    owner: UserRef
    created_at: datetime
    updated_at: datetime
    jobs_count: int


class JobIn(BaseModel):
    """A job submission (JSON) as the server first reads it; multipart takes the same
    fields plus file fields. The type and its parameters are checked after (422 naming each
    problem); the document shows the checked shapes (``JobIn``/``JobForm`` of
    :mod:`api.schemas.job_types`)."""

    project: Line = Field(max_length=100, examples=["1b4e28ba-2fa1-11d2-883f-0016d3cca427"])
    type: Line = Field(max_length=100, examples=["tts"])
    parameters: dict[str, Any] = Field(default_factory=dict, examples=[{"text": "Hello there.", "language": "en"}])
    agent: Line | None = Field(default=None, max_length=100)
    priority: Line = Field(default="normal", max_length=100, examples=["normal"])
    webhook: str | None = Field(default=None, max_length=2048, examples=["https://example.com/aiorch-hook"])
    webhook_events: list[str] | None = Field(default=None, max_length=20, examples=[["job.completed", "job.failed"]])

    @field_validator("webhook_events", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """Form bodies may give the events comma-separated (``job.completed, job.failed``),
        in one field or in several; each entry is split on commas and trimmed."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [e.strip() for v in value for e in v.split(",") if e.strip()]
        return value


class FileOut(BaseModel):
    """A stored input file."""

    name: str
    size: int
    content_type: str
    sha256: str
    url: str


class JobError(BaseModel):
    """Why a job failed or was cancelled."""

    code: str
    message: str


class JobOut(BaseModel):
    """A job as the read model shows it; ``parameters`` has the shape of its ``type``
    (API.md): the document names it a ``oneOf`` of ``<Type>JobOut`` discriminated by
    ``type`` (:mod:`api.schemas.job_types`)."""

    id: UUID
    project: UUID
    type: JobType
    status: JobStatus
    progress: int = Field(ge=0, le=100)
    stage: str
    priority: Priority
    attempt: int
    parameters: dict[str, Any]
    agent: UUID | None
    input_files: dict[str, FileOut]
    created_by: UserRef
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: JobError | None
    has_result: bool
    cancel_requested: bool
    demo: bool = False


class CancelOut(BaseModel):
    """What a cancel did: ``cancelled`` (it was pending), ``cancel_requested`` (it is
    running) or ``completed`` (it finished first)."""

    status: Literal["cancelled", "cancel_requested", "completed"]
    position: int


class ResultFile(BaseModel):
    """One result file."""

    name: str
    content_type: str
    size: int
    url: str


class LogLine(BaseModel):
    """A job's log line."""

    at: datetime
    level: str
    message: str


class ResultOut(BaseModel):
    """A job's result. ``meta`` per type: stt ``{transcript, language, duration_seconds,
    segments}``; tts ``{duration_seconds, voice, language}``; ai_stories ``{text, words,
    seed, model}``; dubbing and video_translation ``{source_language, target_language,
    segments}``; voice_cloning ``{f0_median_hz}``; animated_talking_heads ``{fps,
    duration_seconds, face_box}``."""

    id: UUID
    job: UUID
    result_url: str | None
    result_file: str | None
    result_file_url: str | None
    files: list[ResultFile]
    logs: list[LogLine]
    meta: dict[str, Any]
    finished_at: datetime


class Actor(BaseModel):
    """Who caused an event: a user, a processor or the system (null fields when unknown)."""

    id: str | None = None
    username: str | None = None
    role: str | None = None


class HistoryItem(BaseModel):
    """A stored event of a job."""

    position: int = Field(description="the event's global position")
    version: int = Field(description="the job's version after the event")
    type: str = Field(examples=["JobSubmitted"])
    occurred_at: datetime
    actor: Actor | None
    correlation_id: str | None
    data: dict[str, Any]
