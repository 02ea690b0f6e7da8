"""Request and response models (OpenAPI) of the REST contract."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

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
