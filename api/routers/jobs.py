"""``/api/jobs/``: submit (JSON or multipart), list, read, cancel; results and downloads."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select
from starlette.datastructures import UploadFile

from api.deps import (
    CommandCtx,
    CurrentUser,
    ReadPosition,
    Services,
    ServicesDep,
    after_write,
    bearer,
    created,
    current_user,
)
from api.pagination import PageParams, page_params, paginate
from api.schemas import CancelOut, JobIn, JobOut, ResultOut
from api.views import job_json, log_json, result_json, visible_jobs
from commands.errors import InvalidCommand, NotFound, UnsupportedMediaType
from commands.job_parameters import FILE_FIELDS
from commands.messages import ArchiveJob, CancelJob, RetryJob, SubmitJob, UpdateJob, UpdateProgress
from commands.permissions import require_admin
from projections import tables as t

router = APIRouter(prefix="/api/jobs", tags=["jobs"])
Ordering = Literal["created_at", "-created_at", "finished_at", "-finished_at", "priority", "-priority"]
Status = Literal["pending", "running", "completed", "failed", "cancelled"]
CHUNK = 1024 * 1024

_MULTIPART_DOC = {
    "requestBody": {
        "content": {
            "application/json": {"schema": JobIn.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["project", "type"],
                    "properties": {
                        "project": {"type": "string"},
                        "type": {"type": "string"},
                        "parameters": {"type": "string", "description": "a JSON object"},
                        "agent": {"type": "string"},
                        "priority": {"type": "string"},
                        "input_file": {"type": "string", "format": "binary"},
                        "reference_file": {"type": "string", "format": "binary"},
                        "image_file": {"type": "string", "format": "binary"},
                    },
                }
            },
        },
        "required": True,
    },
}


def load_job(services: Services, user: dict[str, Any], job_id: str) -> dict[str, Any]:
    """A visible job's row. Raises NotFound."""
    with services.engine.connect() as conn:
        row = conn.execute(visible_jobs(select(t.jobs), user).where(t.jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise NotFound(f"no job {job_id}")
    return dict(row)


@router.get("/", dependencies=[ReadPosition])
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
    ordering: Ordering = "-created_at",
) -> dict[str, Any]:
    """Jobs the user may see, newest first, with filters."""
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
    col = c[ordering.lstrip("-")]
    order = col.desc().nulls_last() if ordering.startswith("-") else col.asc().nulls_last()
    with services.engine.connect() as conn:
        return paginate(request, conn, stmt.order_by(order, c.id), params, lambda r: job_json(r, services.signer.sign))


async def _read_submission(request: Request, services: Services) -> tuple[JobIn, dict[str, UploadFile]]:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=3, max_fields=20, max_part_size=1024 * 1024)
        files = {k: v for k, v in form.multi_items() if isinstance(v, UploadFile)}
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        try:
            parameters = json.loads(fields.get("parameters") or "{}")
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            raise InvalidCommand(
                "parameters must be a JSON object", errors=[{"loc": ["body", "parameters"], "msg": "invalid JSON"}]
            ) from None
        raw: dict[str, Any] = {**{k: v for k, v in fields.items() if k != "parameters" and v != ""}, "parameters": parameters}
    elif ctype.startswith("application/json"):
        files = {}
        try:
            raw = await request.json()
        except (ValueError, RecursionError):
            raise InvalidCommand("the body is not valid JSON", errors=[{"loc": ["body"], "msg": "invalid JSON"}]) from None
    else:
        raise UnsupportedMediaType("send application/json or multipart/form-data")
    try:
        return JobIn.model_validate(raw), files
    except ValidationError as exc:
        errors = [{"loc": ["body", *map(str, e["loc"])], "msg": e["msg"]} for e in exc.errors()]
        raise InvalidCommand("the job submission is invalid", errors=errors) from None


def _store_files(services: Services, job_type: str, files: dict[str, UploadFile], limit: int) -> dict[str, dict[str, Any]]:
    """Stream uploads into blob storage and check each sniffed type fits its field.

    Raises UnsupportedMediaType (415) or PayloadTooLarge (413); stored blobs are removed.
    """
    accepted = FILE_FIELDS.get(job_type, {})
    stored: dict[str, Any] = {}
    try:
        for field, upload in files.items():
            blob = services.blobs.save_stream(
                iter(functools.partial(upload.file.read, CHUNK), b""),
                upload.filename or field,
                max_bytes=limit,
            )
            stored[field] = blob
            kinds = accepted.get(field, ())
            if kinds and blob.content_type.split("/")[0] not in kinds:
                raise UnsupportedMediaType(f"{field} is {blob.content_type}; a {job_type} job takes {' or '.join(kinds)} there")
    except BaseException:
        for blob in stored.values():
            services.blobs.delete(blob.key)
        raise
    return {field: blob.describe() for field, blob in stored.items()}


@router.post(
    "/",
    status_code=201,
    response_model=JobOut,
    openapi_extra=_MULTIPART_DOC,
    responses={
        202: {"description": "accepted; the read model has not caught up yet"},
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
    body, files = await _read_submission(request, services)
    try:
        project_id = UUID(body.project)
        agent_id = UUID(body.agent) if body.agent else None
    except ValueError:
        raise InvalidCommand(
            "project and agent must be ids", errors=[{"loc": ["body", "project"], "msg": "not a UUID"}]
        ) from None
    platform = services.platform
    # Validate everything that needs no upload first, so bad input stores nothing.
    await asyncio.to_thread(platform.prepare_submission, body.type, body.parameters, agent_id, set(files), ctx)
    limit = await asyncio.to_thread(services.upload_limit, user["id"])
    input_files = await asyncio.to_thread(_store_files, services, body.type, files, limit)
    request_hash = hashlib.sha256(
        json.dumps(
            [
                body.project,
                body.type,
                body.parameters,
                body.agent,
                body.priority,
                {f: d["sha256"] for f, d in input_files.items()},
            ],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    cmd = SubmitJob(
        project_id, body.type, body.parameters, input_files, body.priority, agent_id, idempotency_key or None, request_hash
    )
    try:
        job_id, position = await asyncio.to_thread(platform.submit_job, cmd, ctx)
    except BaseException:
        _drop(services, input_files)
        raise
    if idempotency_key and (await asyncio.to_thread(platform.get_job, job_id)).input_files != input_files:
        _drop(services, input_files)  # a replay: the first submission's files are the job's
    return await created(
        services,
        position,
        f"/api/jobs/{job_id}/",
        str(job_id),
        lambda: job_json(load_job(services, user, str(job_id)), services.signer.sign),
    )


def _drop(services: Services, input_files: dict[str, dict[str, Any]]) -> None:
    for f in input_files.values():
        services.blobs.delete(f["blob"])


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
        return job_json(row, services.signer.sign)
    from api.routers.history import fold_as_of

    past = fold_as_of(services, job_id, as_of).state()
    return job_json({**past, "created_by_username": row["created_by_username"]}, services.signer.sign)


class JobPatch(BaseModel):
    """Fields of a pending job to change."""

    parameters: dict[str, Any] | None = None
    priority: Literal["low", "normal", "high"] | None = None


@router.patch("/{job_id}/", response_model=JobOut)
async def update_job(job_id: UUID, body: JobPatch, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Edit a pending job's parameters or priority (409 once it has started)."""
    load_job(services, user, str(job_id))
    position = await asyncio.to_thread(services.platform.update_job, UpdateJob(job_id, body.parameters, body.priority), ctx)
    return await after_write(services, position, lambda: job_json(load_job(services, user, str(job_id)), services.signer.sign))


@router.delete("/{job_id}/", status_code=204, response_class=Response)
async def archive_job(job_id: UUID, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Archive a job (204): it leaves lists, its history stays; unfinished work is cancelled."""
    load_job(services, user, str(job_id))
    position = await asyncio.to_thread(services.platform.archive_job, ArchiveJob(job_id), ctx)
    return await after_write(services, position)


@router.post("/{job_id}/retry/", status_code=202, response_model=JobOut)
async def retry_job(job_id: UUID, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Send a failed or cancelled job back to pending with ``attempt + 1`` (409 otherwise)."""
    load_job(services, user, str(job_id))
    position = await asyncio.to_thread(services.platform.retry_job, RetryJob(job_id), ctx)
    return await after_write(
        services, position, lambda: job_json(load_job(services, user, str(job_id)), services.signer.sign), status_code=202
    )


class ProgressIn(BaseModel):
    """A progress report from an external worker."""

    progress: int = Field(ge=0, le=100)
    stage: str = Field(default="", max_length=100)
    logs: list[str] = Field(default_factory=list, max_length=1000)


@router.post("/{job_id}/update_progress/", response_model=JobOut)
async def update_progress(job_id: UUID, body: ProgressIn, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Report progress of a running job (admins: external workers), with optional log lines."""
    require_admin(ctx.actor, "progress reports")
    load_job(services, user, str(job_id))
    now = datetime.now(UTC).isoformat()
    lines = [{"at": now, "level": "info", "message": m[:10_000]} for m in body.logs]
    position = await asyncio.to_thread(
        services.platform.update_progress, UpdateProgress(job_id, body.progress, body.stage, lines), ctx
    )
    return await after_write(services, position, lambda: job_json(load_job(services, user, str(job_id)), services.signer.sign))


@router.get("/{job_id}/logs/", dependencies=[ReadPosition])
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
async def cancel_job(job_id: UUID, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> JSONResponse:
    """Ask a pending or running job to stop: ``cancelled`` (it was pending),
    ``cancel_requested`` (running work stops at its next checkpoint) or ``completed``
    (it finished first). 409 if it already failed or was cancelled."""
    load_job(services, user, str(job_id))
    status, position = await asyncio.to_thread(services.platform.cancel_job, CancelJob(job_id), ctx)
    return JSONResponse({"status": status, "position": position}, status_code=202, headers={"Aiorch-Position": str(position)})


@router.get("/{job_id}/result/", response_model=ResultOut, dependencies=[ReadPosition])
def get_result(job_id: UUID, services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    """The job's result (404 until it has one)."""
    load_job(services, user, str(job_id))
    return result_of(services, str(job_id))


def download_viewer(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    exp: int | None = None,
    sig: str | None = None,
) -> dict[str, Any] | None:
    """Who downloads: a Bearer user, or nobody when the link carries a valid signature
    (``?exp=&sig=``, which only a user who could see the file was given)."""
    if exp is not None and sig is not None:
        services.signer.verify(request.url.path, exp, sig)
        return None
    return current_user(request, services, credentials)


DownloadViewer = Annotated[dict[str, Any] | None, Depends(download_viewer)]


def _download(services: Services, blob: dict[str, Any]) -> FileResponse:
    path = services.blobs.path(blob["blob"])
    if not path.exists():
        raise NotFound("the file is no longer stored")
    return FileResponse(path, media_type=blob["content_type"], filename=blob["name"])


def _job_row(services: Services, viewer: dict[str, Any] | None, job_id: str) -> dict[str, Any]:
    if viewer is not None:
        return load_job(services, viewer, job_id)
    with services.engine.connect() as conn:
        row = conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise NotFound(f"no job {job_id}")
    return dict(row)


@router.get("/{job_id}/result/files/{index}/", response_class=FileResponse)
def download_result(job_id: UUID, index: int, services: ServicesDep, viewer: DownloadViewer) -> FileResponse:
    """Download result file ``index`` (0 is the main file); Bearer or signed link; supports ``Range``."""
    _job_row(services, viewer, str(job_id))
    files = result_row(services, str(job_id))["files"]
    if not 0 <= index < len(files):
        raise NotFound(f"job {job_id} has no result file {index}")
    return _download(services, files[index])


@router.get("/{job_id}/files/{field}/", response_class=FileResponse)
def download_input(job_id: UUID, field: str, services: ServicesDep, viewer: DownloadViewer) -> FileResponse:
    """Download an input file of the job; Bearer or signed link; supports ``Range``."""
    files = _job_row(services, viewer, str(job_id))["input_files"] or {}
    if field not in files:
        raise NotFound(f"job {job_id} has no input file {field}")
    return _download(services, files[field])


def result_row(services: Services, job_id: str) -> dict[str, Any]:
    """The result row of a job. Raises NotFound until it has one."""
    with services.engine.connect() as conn:
        row = conn.execute(select(t.job_results).where(t.job_results.c.job_id == job_id)).mappings().first()
    if row is None:
        raise NotFound(f"job {job_id} has no result")
    return dict(row)


def result_of(services: Services, job_id: str) -> dict[str, Any]:
    """The contract's result shape of a job (logs: its first 1,000 lines)."""
    row = result_row(services, job_id)
    with services.engine.connect() as conn:
        logs = (
            conn.execute(
                select(t.job_logs)
                .where(t.job_logs.c.job_id == job_id)
                .order_by(t.job_logs.c.position, t.job_logs.c.seq)
                .limit(1000)
            )
            .mappings()
            .all()
        )
    return result_json(row, [log_json(dict(r)) for r in logs], services.signer.sign)
