"""Request and response models (OpenAPI) of the REST contract."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from commands.text import Line, Text


class Credentials(BaseModel):
    """Username and password (a username holds no control character: 422)."""

    username: Line = Field(min_length=1, max_length=150, examples=["alice"])
    password: str = Field(min_length=1, max_length=1024, examples=["s3cret-pass"])


class TokenPair(BaseModel):
    """An access token (short-lived) and a refresh token."""

    access: str
    refresh: str


class RefreshBody(BaseModel):
    """A refresh token."""

    refresh: str


class AccessToken(BaseModel):
    """A new access token."""

    access: str


class VerifyBody(BaseModel):
    """Any token to check."""

    token: str


class UserRef(BaseModel):
    """A user, briefly."""

    id: str
    username: str | None


class ProjectIn(BaseModel):
    """A new project. Text follows :mod:`commands.text`'s rule (422 naming the field)."""

    name: Line = Field(min_length=1, max_length=200, examples=["Podcast season 2"])
    description: Text = Field(default="", max_length=10_000)


class ProjectOut(BaseModel):
    """A project as the read model shows it."""

    id: str
    name: str
    description: str
    owner: UserRef
    created_at: datetime
    updated_at: datetime
    jobs_count: int


class JobIn(BaseModel):
    """A job submission (JSON). Multipart takes the same fields plus file fields."""

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
    """A job as the read model shows it."""

    id: str
    project: str
    type: str
    status: str
    progress: int
    stage: str
    priority: str
    attempt: int
    parameters: dict[str, Any]
    agent: str | None
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


class Accepted(BaseModel):
    """A create that the read models have not shown yet: poll ``Location``."""

    id: str
    position: int


class CancelOut(BaseModel):
    """What a cancel did: ``cancelled``, ``cancel_requested`` or ``completed``."""

    status: str
    position: int


class ResultFile(BaseModel):
    """One result file."""

    name: str
    content_type: str
    size: int
    url: str


class ResultOut(BaseModel):
    """A job's result."""

    id: str
    job: str
    result_url: str | None
    result_file: str | None
    result_file_url: str | None
    files: list[ResultFile]
    logs: list[dict[str, Any]]
    meta: dict[str, Any]
    finished_at: datetime


class Page(BaseModel):
    """A DRF-style page."""

    count: int
    next: str | None
    previous: str | None
    results: list[Any]
