"""``/api/jobs/``: submit (JSON or multipart), list, read, edit, cancel, retry, archive;
results and downloads. Each write parses, calls one handler and answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.deps import (
    CommandCtx,
    CurrentUser,
    ReadPosition,
    Services,
    ServicesDep,
    SignedInUser,
    after_write,
    bearer,
    created,
    current_user,
    link_user,
)
from api.downloads import download
from api.job_access import load_job, result_of, result_row
from api.pagination import PageParams, page_params, paginate
from api.schemas import (
    ACCEPTED,
    BINARY_DOWNLOAD,
    LAGGING,
    CancelOut,
    JobOut,
    LogLine,
    Page,
    ResultOut,
    ok,
)
from api.submissions import SUBMISSION_DOC, read_submission, submit
from api.views import job_json, log_json
from commands.errors import NotFound
from commands.messages import ArchiveJob, CancelJob, RetryJob, UpdateJob, UpdateProgress
from projections import tables as t
from projections.queries import Viewer, order_by, priority_rank, visible_jobs

router = APIRouter(prefix="/api/jobs", tags=["jobs"])
#: ``?ordering=`` fields (comma-separated, ``-`` for descending; unknown ones are ignored)
ORDERING_FIELDS = ("created_at", "finished_at", "priority")
Status = Literal["pending", "running", "completed", "failed", "cancelled"]


def _job_view(services: Services, user: SignedInUser, job_id: UUID) -> Any:
    """``fetch()`` of the job as ``user`` sees it in the read models (for :func:`after_write`)."""
    return lambda: job_json(load_job(services, user, str(job_id)), services.signer.for_user(user))


@router.get("/", dependencies=[ReadPosition], response_model=None, responses=ok(Page[JobOut]))
def list_jobs(
    request: Request,
    services: ServicesDep,
    user: CurrentUser,
    params: Annotated[PageParams, Depends(page_params)],
    type: str | None = None,
    status: Status | None = None,
    project: UUID | None = None,
    agent: UUID | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    ordering: Annotated[
        str | None,
        Query(description="comma-separated fields of created_at, finished_at, priority (by rank); `-` descending"),
    ] = None,
) -> dict[str, Any]:
    """Jobs the user may see, newest first, with filters; ``?ordering=`` as DRF reads it."""
    stmt = visible_jobs(select(t.jobs), user)
    c = t.jobs.c
    for col, value in (
        (c.type, type),
        (c.status, status),
        (c.project_id, project and str(project)),
        (c.agent_id, agent and str(agent)),
    ):
        if value is not None:
            stmt = stmt.where(col == value)
    if created_after:
        stmt = stmt.where(c.created_at >= created_after)
    if created_before:
        stmt = stmt.where(c.created_at < created_before)
    fields = {"created_at": c.created_at, "finished_at": c.finished_at, "priority": priority_rank(c.priority)}
    stmt = order_by(stmt, ordering, fields, "-created_at", c.id)
    with services.engine.connect() as conn:
        return paginate(request, conn, stmt, params, lambda r: job_json(r, services.signer.for_user(user)))


@router.post(
    "/",
    status_code=201,
    response_model=JobOut,
    openapi_extra=SUBMISSION_DOC,
    responses={
        **ACCEPTED,
        415: {"description": "a file's sniffed type does not fit its field"},
    },
)
async def submit_job(
    request: Request,
    services: ServicesDep,
    ctx: CommandCtx,
    user: CurrentUser,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Any:
    """Submit a job: JSON ``{project, type, parameters, agent?, priority?}`` or multipart with
    the same fields (``parameters`` as a JSON string) and file fields ``input_file``,
    ``reference_file``, ``image_file``. Nothing is stored when anything is invalid.

    ``Idempotency-Key`` (≤ 255 characters, per user): the same key and body answer the
    first job again; the same key with another body is refused (422)."""
    submission = await read_submission(request, services, user, idempotency_key)
    job_id, position = await submit(services, submission, ctx)
    return await created(services, position, f"/api/jobs/{job_id}/", str(job_id), _job_view(services, user, job_id))


@router.get("/{job_id}/", response_model=JobOut, dependencies=[ReadPosition])
def get_job(
    job_id: UUID,
    services: ServicesDep,
    user: CurrentUser,
    as_of: Annotated[str | None, Query(description="a global position or an ISO 8601 time")] = None,
) -> dict[str, Any]:
    """One job; with ``?as_of=`` the job as it was then, folded from the event store."""
    row = load_job(services, user, str(job_id))
    if as_of is None:
        return job_json(row, services.signer.for_user(user))
    from api.time_travel import fold_as_of

    past = fold_as_of(services, job_id, as_of).as_dict()
    return job_json({**past, "created_by_username": row["created_by_username"]}, services.signer.for_user(user))


class JobPatch(BaseModel):
    """Fields of a pending job to change."""

    parameters: dict[str, Any] | None = None
    priority: Literal["low", "normal", "high"] | None = None


@router.patch("/{job_id}/", response_model=JobOut, responses=LAGGING)
async def update_job(job_id: UUID, body: JobPatch, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Edit a pending job's parameters or priority (409 once it has started)."""
    position = await services.command(services.platform.update_job, UpdateJob(job_id, body.parameters, body.priority), ctx)
    return await after_write(services, position, _job_view(services, user, job_id))


@router.delete("/{job_id}/", status_code=204, response_class=Response, responses=LAGGING)
async def archive_job(job_id: UUID, services: ServicesDep, ctx: CommandCtx) -> Response:
    """Archive a job (204): it leaves lists, its history stays; unfinished work is cancelled."""
    position = await services.command(services.platform.archive_job, ArchiveJob(job_id), ctx)
    return await after_write(services, position)


@router.post("/{job_id}/retry/", status_code=202, response_model=JobOut)
async def retry_job(job_id: UUID, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Send a failed or cancelled job back to pending with ``attempt + 1`` (409 otherwise)."""
    position = await services.command(services.platform.retry_job, RetryJob(job_id), ctx)
    return await after_write(services, position, _job_view(services, user, job_id), status_code=202)


class ProgressIn(BaseModel):
    """A progress report from an external worker."""

    progress: int = Field(ge=0, le=100)
    stage: str = Field(default="", max_length=100)
    logs: list[str] = Field(default_factory=list, max_length=1000)


@router.post("/{job_id}/update_progress/", response_model=JobOut, responses=LAGGING)
async def update_progress(job_id: UUID, body: ProgressIn, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Report progress of a running job (admins: external workers), with optional log lines."""
    now = datetime.now(UTC).isoformat()
    lines = [{"at": now, "level": "info", "message": m[:10_000]} for m in body.logs]
    cmd = UpdateProgress(job_id, body.progress, body.stage, lines)
    position = await services.command(services.platform.update_progress, cmd, ctx)
    return await after_write(services, position, _job_view(services, user, job_id))


@router.get("/{job_id}/logs/", dependencies=[ReadPosition], response_model=None, responses=ok(Page[LogLine]))
def job_logs(
    job_id: UUID,
    request: Request,
    services: ServicesDep,
    user: CurrentUser,
    params: Annotated[PageParams, Depends(page_params)],
    after: Annotated[int | None, Query(ge=0, le=2**63 - 1, description="only lines stored after this position")] = None,
) -> dict[str, Any]:
    """The job's log lines in order ``{at, level, message}``, paginated; ``?after=`` a position."""
    load_job(services, user, str(job_id))
    stmt = select(t.job_logs).where(t.job_logs.c.job_id == str(job_id))
    if after is not None:
        stmt = stmt.where(t.job_logs.c.position > after)
    with services.engine.connect() as conn:
        return paginate(request, conn, stmt.order_by(t.job_logs.c.position, t.job_logs.c.seq), params, log_json)


@router.post("/{job_id}/cancel/", status_code=202, response_model=CancelOut)
async def cancel_job(job_id: UUID, services: ServicesDep, ctx: CommandCtx) -> JSONResponse:
    """Ask a pending or running job to stop: ``cancelled`` (it was pending),
    ``cancel_requested`` (running work stops at its next checkpoint) or ``completed``
    (it finished first). 409 if it already failed or was cancelled."""
    status, position = await services.command(services.platform.cancel_job, CancelJob(job_id), ctx)
    return JSONResponse({"status": status, "position": position}, status_code=202, headers={"Aiorch-Position": str(position)})


@router.get("/{job_id}/result/", response_model=ResultOut, dependencies=[ReadPosition])
def get_result(job_id: UUID, services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    """The job's result (404 until it has one)."""
    load_job(services, user, str(job_id))
    return result_of(services, str(job_id), user)


def download_viewer(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    exp: int | None = None,
    sig: str | None = None,
    uid: str | None = None,
) -> Viewer:
    """Who downloads: a Bearer user, or the active user a valid signed link was given to
    (``?exp=&uid=&sig=``); either sees only the files of jobs they may see."""
    if exp is not None and sig is not None:
        return link_user(services, request.url.path, exp, uid or "", sig)
    return current_user(request, services, credentials)


DownloadViewer = Annotated[Viewer, Depends(download_viewer)]


@router.get("/{job_id}/result/files/{index}/", response_class=FileResponse, responses=BINARY_DOWNLOAD)
def download_result(job_id: UUID, index: int, request: Request, services: ServicesDep, viewer: DownloadViewer) -> Response:
    """Download result file ``index`` (0 is the main file); Bearer or signed link; supports ``Range``."""
    load_job(services, viewer, str(job_id))
    files = result_row(services, str(job_id))["files"]
    if not 0 <= index < len(files):
        raise NotFound(f"job {job_id} has no result file {index}")
    return download(services.blobs, request, files[index])


@router.get("/{job_id}/files/{field}/", response_class=FileResponse, responses=BINARY_DOWNLOAD)
def download_input(job_id: UUID, field: str, request: Request, services: ServicesDep, viewer: DownloadViewer) -> Response:
    """Download an input file of the job; Bearer or signed link; supports ``Range``."""
    files = load_job(services, viewer, str(job_id))["input_files"] or {}
    if field not in files:
        raise NotFound(f"job {job_id} has no input file {field}")
    return download(services.blobs, request, files[field])
