"""Request and response models (OpenAPI) of the REST contract."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from commands.text import Line, Text
from events import JOB_TYPES, ROLES

T = TypeVar("T")


class JobType(StrEnum):
    """A job type (also an agent's type); the catalogue is ``events.JOB_TYPES``."""

    stt = "stt"
    tts = "tts"
    voice_cloning = "voice_cloning"
    dubbing = "dubbing"
    ai_stories = "ai_stories"
    video_translation = "video_translation"
    animated_talking_heads = "animated_talking_heads"


class JobStatus(StrEnum):
    """Where a job is: pending → running → completed | failed | cancelled."""

    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class Priority(StrEnum):
    """How soon processors claim a job."""

    low = "low"
    normal = "normal"
    high = "high"


class Role(StrEnum):
    """What a user may do: admins everything, editors their own work, viewers read."""

    admin = "admin"
    editor = "editor"
    viewer = "viewer"


assert tuple(JobType) == JOB_TYPES and tuple(Role) == ROLES, "api.schemas enums must follow events"


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

    id: UUID
    username: str | None


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
    """A job as the read model shows it; ``parameters`` has the shape of its ``type``
    (see API.md)."""

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


class Accepted(BaseModel):
    """A create that the read models have not shown yet (202): poll ``Location``, or read
    with ``?min_position=position``."""

    id: UUID
    position: int


class Lagging(BaseModel):
    """A write the read models have not shown yet (202): read with ``?min_position=position``."""

    position: int


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


class Page(BaseModel, Generic[T]):
    """A DRF-style page: ``next``/``previous`` are absolute links or null."""

    count: int = Field(ge=0)
    next: str | None
    previous: str | None
    results: list[T]


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


class Profile(BaseModel):
    """A user's profile."""

    id: UUID
    username: str
    email: str | None
    role: Role
    is_active: bool
    created_at: datetime


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


class Count(BaseModel):
    """How many were affected."""

    count: int


class Empty(BaseModel):
    """An empty object ``{}``."""


class Live(BaseModel):
    """The process answers."""

    status: Literal["ok"]


class Ready(BaseModel):
    """Readiness: ``checks`` per part (``"ok"`` or why not; lags in events); 503 only when
    a part this process needs (the database) is down."""

    status: Literal["ok", "degraded", "down"]
    checks: dict[str, Any]


# -- documenting answers that routes send as ready responses ----------------------------------


def ok(model: Any, status: int = 200, description: str = "Successful Response") -> dict[int | str, dict[str, Any]]:
    """``responses=`` entry documenting a 2xx body that the route builds itself (FastAPI
    neither validates nor filters it; the contract tests check that it conforms)."""
    return {status: {"model": model, "description": description}}


#: ``responses=`` of a create that may answer 202 before the read models show it.
ACCEPTED = ok(Accepted, 202, "accepted; the read models have not shown it yet: poll `Location`")
#: ``responses=`` of a write that may answer 202 before the read models show it.
LAGGING = ok(Lagging, 202, "done; the read models have not shown it yet: read with `?min_position=position`")
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_FILE_TYPES = ("audio/*", "video/*", "image/*", "text/*", "application/*")
#: ``responses=`` of a file download: the file (200) or a byte range of it (206).
BINARY_DOWNLOAD: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the file, with its sniffed Content-Type, Content-Length and Content-Disposition",
        "content": dict.fromkeys(_FILE_TYPES, _BINARY),
    },
    206: {"description": "the requested byte range (`Range`)", "content": dict.fromkeys(_FILE_TYPES, _BINARY)},
    416: {"description": "`Range` not satisfiable (no body)"},
}


# -- errors (RFC 9457, application/problem+json) ---------------------------------------------

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemError(BaseModel):
    """One invalid input: where (``["body", "parameters", "text"]``) and why."""

    loc: list[str | int] = Field(examples=[["body", "parameters", "text"]])
    msg: str = Field(examples=["Field required"])


class Problem(BaseModel):
    """An RFC 9457 problem; ``instance`` is the request id (``X-Request-ID``). ``errors``
    appears when the problem is about given values (always on a 422)."""

    type: str = Field(examples=["https://aiorch.dev/problems/not-found"])
    title: str = Field(examples=["Not found"])
    status: int = Field(ge=400, le=599, examples=[404])
    detail: str = Field(examples=["no job 1b4e28ba-2fa1-11d2-883f-0016d3cca427"])
    instance: str = Field(description="the request id (X-Request-ID)")
    errors: list[ProblemError] | None = Field(default=None, description="what was refused, when known")


class ValidationProblem(Problem):
    """A 422 problem: ``errors`` lists every invalid input."""

    errors: list[ProblemError]


_STATUS_TEXT = {
    400: "Bad request: the body does not parse",
    401: "Not authenticated: a missing, expired, tampered or revoked token (or bad credentials)",
    403: "Forbidden: authenticated, but without the right",
    404: "Not found, or not visible to you",
    409: "Conflict with the current state, or ?min_position beyond the store's head",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation error: `errors` lists each invalid input",
    429: "Too many requests: retry after `Retry-After` seconds",
    503: "Service unavailable (the read models lag or the database is down): retry after `Retry-After`",
}


def problem_response(status: int, description: str | None = None) -> dict[str, Any]:
    """The OpenAPI response object of one problem status: :class:`ValidationProblem` for
    422, else :class:`Problem`, under ``application/problem+json``."""
    schema = "ValidationProblem" if status == 422 else "Problem"
    return {
        "description": description or _STATUS_TEXT.get(status, "Error"),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def problems(*statuses: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for problem statuses; ``described`` gives own descriptions
    (``_409="the agent is inactive"``)."""
    out: dict[int | str, dict[str, Any]] = {s: problem_response(s) for s in statuses}
    for key, text in described.items():
        status = int(key.lstrip("_"))
        out[status] = problem_response(status, text)
    return out


class AcceptedWithSecret(Accepted):
    """A new webhook endpoint the read models have not shown yet (202), with its secret."""

    secret: str


class Redelivered(Count):
    """Failed deliveries queued again (``count``), and the position of the last write."""

    position: int


#: ``responses=`` of ``/metrics``: Prometheus' text format.
METRICS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}},
}


def events_responses() -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a job's feed: server-sent events, or JSON pages of history items."""
    page = Page[HistoryItem]
    return {
        200: {
            "model": page,
            "description": "`Accept: text/event-stream`: unnamed events (`id:` the position, `data:` a "
            "HistoryItem as JSON); else a JSON page of history items after `?after=`",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        429: {"description": "too many live connections of this user"},
    }


class EffectiveSettings(BaseModel):
    """The settings in force for the caller: their own over global over defaults
    (sizes in MB of 1,048,576 bytes, durations in seconds); other keys the system keeps
    (``demo.seeded``) may appear too."""

    model_config = ConfigDict(extra="allow")

    max_file_size_mb: int
    max_concurrent_jobs: int
    default_language: str | None
    max_input_duration_s: float
