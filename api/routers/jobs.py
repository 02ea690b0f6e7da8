"""``/api/jobs/``: submit (JSON or multipart), list, read, cancel; results and downloads."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select

from api.deps import (
    CommandCtx,
    CurrentUser,
    ReadPosition,
    Services,
    ServicesDep,
    StoredFile,
    after_write,
    bearer,
    created,
    current_user,
    link_user,
)
from api.downloads import download
from api.job_access import load_job
from api.pagination import PageParams, page_params, paginate
from api.schemas import (
    ACCEPTED,
    BINARY_DOWNLOAD,
    LAGGING,
    CancelOut,
    JobIn,
    JobOut,
    LogLine,
    Page,
    Priority,
    ResultOut,
    ok,
)
from api.uploads import FIELDS_BYTES, MultipartReader
from api.views import job_json, log_json, result_json, visible_jobs
from commands.errors import InvalidCommand, NotFound, UnsupportedMediaType
from commands.job_parameters import FILE_FIELDS
from commands.messages import ArchiveJob, CancelJob, RetryJob, SubmitJob, UpdateJob, UpdateProgress
from commands.permissions import require_admin, require_writer
from commands.webhook_handlers import check_job_webhook
from events import JOB_TYPES
from projections import tables as t
from projections.queries import order_by, priority_rank

router = APIRouter(prefix="/api/jobs", tags=["jobs"])
#: ``?ordering=`` fields (comma-separated, ``-`` for descending; unknown ones are ignored)
ORDERING_FIELDS = ("created_at", "finished_at", "priority")
Status = Literal["pending", "running", "completed", "failed", "cancelled"]


def _job_in_doc() -> dict[str, Any]:
    """The JSON body's schema: :class:`JobIn` with the type and priority named as enums
    (the handler refuses other values with 422)."""
    schema = JobIn.model_json_schema()
    schema["properties"]["type"]["enum"] = list(JOB_TYPES)
    schema["properties"]["priority"]["enum"] = [p.value for p in Priority]
    return schema


_MULTIPART_DOC = {
    "requestBody": {
        "content": {
            "application/json": {"schema": _job_in_doc()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["project", "type"],
                    "properties": {
                        "project": {"type": "string"},
                        "type": {"type": "string", "enum": list(JOB_TYPES)},
                        "parameters": {"type": "string", "description": "a JSON object"},
                        "agent": {"type": "string"},
                        "priority": {"type": "string", "enum": [p.value for p in Priority]},
                        "webhook": {"type": "string", "description": "a URL that receives the job's events"},
                        "webhook_events": {"type": "string", "description": "a JSON list, or comma-separated"},
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


ALL_FILE_FIELDS = frozenset(f for fields in FILE_FIELDS.values() for f in fields)
MAX_PARTS = 20


def _check_file(job_type: str | None, field: str, content_type: str | None = None) -> None:
    """Refuse a file field the job type does not take (422), or a sniffed type that does not
    fit the field (415). With ``job_type`` unknown (not sent yet) only the field's name is checked."""
    accepted = FILE_FIELDS.get(job_type or "")
    if field not in (ALL_FILE_FIELDS if accepted is None else accepted):
        what = f"a {job_type} job takes" if accepted is not None else "there is"
        raise InvalidCommand(f"{what} no file {field!r}", errors=[{"loc": ["body", field], "msg": f"{what} no file {field!r}"}])
    kinds = (accepted or {}).get(field, ())
    if content_type is not None and kinds and content_type.split("/")[0] not in kinds:
        raise UnsupportedMediaType(f"{field} is {content_type}; a {job_type} job takes {' or '.join(kinds)} there")


async def _read_multipart(request: Request, services: Services, limit: int) -> tuple[dict[str, str], dict[str, StoredFile]]:
    """Text fields and stored files of a multipart submission, read as it streams in: each
    file goes straight into blob storage (at most ``limit`` bytes each, 413 the moment it is
    passed; 415 from its first 8 KiB when the ``type`` field came first); text fields
    together at most ``FIELDS_BYTES``. On any error nothing stays stored."""
    reader = MultipartReader(request.stream(), request.headers["content-type"], max_parts=MAX_PARTS)
    fields: dict[str, str] = {}
    stored: dict[str, StoredFile] = {}
    budget = FIELDS_BYTES
    try:
        async for part in reader.parts():
            if part.filename is None:
                value = await reader.text(budget, f"the form's text fields are over {FIELDS_BYTES} bytes together")
                budget -= len(value.encode())
                fields[part.name] = value
                continue
            if part.name in stored:
                raise InvalidCommand(
                    f"the file {part.name!r} was sent twice", errors=[{"loc": ["body", part.name], "msg": "sent twice"}]
                )
            job_type = fields.get("type")
            _check_file(job_type, part.name)
            stored[part.name] = await services.blobs.save_stream(
                reader.data(),
                part.filename or part.name,
                max_bytes=limit,
                accept=functools.partial(_check_file, job_type, part.name) if job_type else None,
            )
    except BaseException:
        _drop(services, stored)
        raise
    return fields, stored


async def _read_submission(request: Request, services: Services, limit: int) -> tuple[dict[str, Any], dict[str, StoredFile]]:
    """The submission's fields (not yet validated) and its stored files (the caller deletes
    them if the submission fails). Raises InvalidCommand, UnsupportedMediaType, PayloadTooLarge."""
    ctype = request.headers.get("content-type", "")
    files: dict[str, StoredFile] = {}
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        if ctype.startswith("multipart/form-data"):
            fields, files = await _read_multipart(request, services, limit)
        else:  # bounded by AIORCH_MAX_BODY_BYTES (api.limits)
            fields = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        try:
            parameters = json.loads(fields.get("parameters") or "{}")
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            _drop(services, files)
            raise InvalidCommand(
                "parameters must be a JSON object", errors=[{"loc": ["body", "parameters"], "msg": "invalid JSON"}]
            ) from None
        raw: dict[str, Any] = {**{k: v for k, v in fields.items() if k != "parameters" and v != ""}, "parameters": parameters}
        if isinstance(raw.get("webhook_events"), str) and raw["webhook_events"].lstrip().startswith("["):
            try:  # a JSON list (else comma-separated, split by JobIn)
                raw["webhook_events"] = json.loads(raw["webhook_events"])
            except (ValueError, RecursionError):
                _drop(services, files)
                raise InvalidCommand(
                    "webhook_events must be a JSON list", errors=[{"loc": ["body", "webhook_events"], "msg": "invalid JSON"}]
                ) from None
    elif ctype.startswith("application/json"):
        try:
            raw = await request.json()
        except (ValueError, RecursionError):
            raise InvalidCommand("the body is not valid JSON", errors=[{"loc": ["body"], "msg": "invalid JSON"}]) from None
    else:
        raise UnsupportedMediaType("send application/json, application/x-www-form-urlencoded or multipart/form-data")
    return raw, files


def _job_in(raw: Any) -> JobIn:
    try:
        return JobIn.model_validate(raw)
    except ValidationError as exc:
        errors = [{"loc": ["body", *map(str, e["loc"])], "msg": e["msg"]} for e in exc.errors()]
        raise InvalidCommand("the job submission is invalid", errors=errors) from None


@router.post(
    "/",
    status_code=201,
    response_model=JobOut,
    openapi_extra=_MULTIPART_DOC,
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
    require_writer(ctx.actor)  # viewers are refused before a byte of the body is read
    limit = await asyncio.to_thread(services.upload_limit, user["id"])
    raw, files = await _read_submission(request, services, limit)
    try:
        body = _job_in(raw)
        try:
            project_id = UUID(body.project)
            agent_id = UUID(body.agent) if body.agent else None
        except ValueError:
            raise InvalidCommand(
                "project and agent must be ids", errors=[{"loc": ["body", "project"], "msg": "not a UUID"}]
            ) from None
        platform = services.platform
        await asyncio.to_thread(platform.prepare_submission, body.type, body.parameters, agent_id, set(files), ctx)
        check_job_webhook(body.webhook, body.webhook_events, allow_private=platform.webhook_allow_private)
        for field, blob in files.items():  # files sent before the type field were not checked yet
            _check_file(body.type, field, blob.content_type)
        input_files = {field: blob.describe() for field, blob in files.items()}
        request_hash = hashlib.sha256(
            json.dumps(
                [
                    body.project,
                    body.type,
                    body.parameters,
                    body.agent,
                    body.priority,
                    {f: d["sha256"] for f, d in input_files.items()},
                    *([body.webhook, body.webhook_events] if body.webhook or body.webhook_events else []),
                ],
                sort_keys=True,
                default=str,
            ).encode()
        ).hexdigest()
        cmd = SubmitJob(
            project_id,
            body.type,
            body.parameters,
            input_files,
            body.priority,
            agent_id,
            idempotency_key or None,
            request_hash,
            webhook=body.webhook,
            webhook_events=body.webhook_events,
        )
        job_id, position = await services.command(platform.submit_job, cmd, ctx)
    except BaseException:
        _drop(services, files)
        raise
    if idempotency_key and (await asyncio.to_thread(platform.get_job, job_id)).input_files != input_files:
        _drop(services, files)  # a replay: the first submission's files are the job's
    return await created(
        services,
        position,
        f"/api/jobs/{job_id}/",
        str(job_id),
        lambda: job_json(load_job(services, user, str(job_id)), services.signer.for_user(user)),
    )


def _drop(services: Services, files: dict[str, StoredFile]) -> None:
    """Delete stored files of a submission that did not become a job."""
    for blob in files.values():
        services.blobs.delete(blob.key)


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
    from api.routers.history import fold_as_of

    past = fold_as_of(services, job_id, as_of).state()
    return job_json({**past, "created_by_username": row["created_by_username"]}, services.signer.for_user(user))


class JobPatch(BaseModel):
    """Fields of a pending job to change."""

    parameters: dict[str, Any] | None = None
    priority: Literal["low", "normal", "high"] | None = None


@router.patch("/{job_id}/", response_model=JobOut, responses=LAGGING)
async def update_job(job_id: UUID, body: JobPatch, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Edit a pending job's parameters or priority (409 once it has started)."""
    load_job(services, user, str(job_id))
    position = await services.command(services.platform.update_job, UpdateJob(job_id, body.parameters, body.priority), ctx)
    return await after_write(
        services, position, lambda: job_json(load_job(services, user, str(job_id)), services.signer.for_user(user))
    )


@router.delete("/{job_id}/", status_code=204, response_class=Response, responses=LAGGING)
async def archive_job(job_id: UUID, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Archive a job (204): it leaves lists, its history stays; unfinished work is cancelled."""
    load_job(services, user, str(job_id))
    position = await services.command(services.platform.archive_job, ArchiveJob(job_id), ctx)
    return await after_write(services, position)


@router.post("/{job_id}/retry/", status_code=202, response_model=JobOut)
async def retry_job(job_id: UUID, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Send a failed or cancelled job back to pending with ``attempt + 1`` (409 otherwise)."""
    load_job(services, user, str(job_id))
    position = await services.command(services.platform.retry_job, RetryJob(job_id), ctx)
    return await after_write(
        services,
        position,
        lambda: job_json(load_job(services, user, str(job_id)), services.signer.for_user(user)),
        status_code=202,
    )


class ProgressIn(BaseModel):
    """A progress report from an external worker."""

    progress: int = Field(ge=0, le=100)
    stage: str = Field(default="", max_length=100)
    logs: list[str] = Field(default_factory=list, max_length=1000)


@router.post("/{job_id}/update_progress/", response_model=JobOut, responses=LAGGING)
async def update_progress(job_id: UUID, body: ProgressIn, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Report progress of a running job (admins: external workers), with optional log lines."""
    require_admin(ctx.actor, "progress reports")
    load_job(services, user, str(job_id))
    now = datetime.now(UTC).isoformat()
    lines = [{"at": now, "level": "info", "message": m[:10_000]} for m in body.logs]
    position = await asyncio.to_thread(
        services.platform.update_progress, UpdateProgress(job_id, body.progress, body.stage, lines), ctx
    )
    return await after_write(
        services, position, lambda: job_json(load_job(services, user, str(job_id)), services.signer.for_user(user))
    )


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
async def cancel_job(job_id: UUID, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> JSONResponse:
    """Ask a pending or running job to stop: ``cancelled`` (it was pending),
    ``cancel_requested`` (running work stops at its next checkpoint) or ``completed``
    (it finished first). 409 if it already failed or was cancelled."""
    load_job(services, user, str(job_id))
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
) -> dict[str, Any] | None:
    """Who downloads: a Bearer user, or the active user a valid signed link was given to
    (``?exp=&uid=&sig=``); either sees only the files of jobs they may see."""
    if exp is not None and sig is not None:
        return link_user(services, request.url.path, exp, uid or "", sig)
    return current_user(request, services, credentials)


DownloadViewer = Annotated[dict[str, Any] | None, Depends(download_viewer)]


def _download(services: Services, request: Request, blob: dict[str, Any]) -> Response:
    return download(services.blobs, request, blob)


def _job_row(services: Services, viewer: dict[str, Any] | None, job_id: str) -> dict[str, Any]:
    if viewer is not None:
        return load_job(services, viewer, job_id)
    with services.engine.connect() as conn:
        row = conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise NotFound(f"no job {job_id}")
    return dict(row)


@router.get("/{job_id}/result/files/{index}/", response_class=FileResponse, responses=BINARY_DOWNLOAD)
def download_result(job_id: UUID, index: int, request: Request, services: ServicesDep, viewer: DownloadViewer) -> Response:
    """Download result file ``index`` (0 is the main file); Bearer or signed link; supports ``Range``."""
    _job_row(services, viewer, str(job_id))
    files = result_row(services, str(job_id))["files"]
    if not 0 <= index < len(files):
        raise NotFound(f"job {job_id} has no result file {index}")
    return _download(services, request, files[index])


@router.get("/{job_id}/files/{field}/", response_class=FileResponse, responses=BINARY_DOWNLOAD)
def download_input(job_id: UUID, field: str, request: Request, services: ServicesDep, viewer: DownloadViewer) -> Response:
    """Download an input file of the job; Bearer or signed link; supports ``Range``."""
    files = _job_row(services, viewer, str(job_id))["input_files"] or {}
    if field not in files:
        raise NotFound(f"job {job_id} has no input file {field}")
    return _download(services, request, files[field])


def result_row(services: Services, job_id: str) -> dict[str, Any]:
    """The result row of a job. Raises NotFound until it has one."""
    with services.engine.connect() as conn:
        row = conn.execute(select(t.job_results).where(t.job_results.c.job_id == job_id)).mappings().first()
    if row is None:
        raise NotFound(f"job {job_id} has no result")
    return dict(row)


def result_of(services: Services, job_id: str, user: dict[str, Any]) -> dict[str, Any]:
    """The contract's result shape of a job (logs: its first 1,000 lines), its links signed for ``user``."""
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
    return result_json(row, [log_json(dict(r)) for r in logs], services.signer.for_user(user))
