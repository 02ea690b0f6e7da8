"""``/api/jobs/``: submit (JSON or multipart), list, read, cancel; results and downloads."""

from __future__ import annotations

import asyncio
import functools
import json
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from sqlalchemy import select
from starlette.datastructures import UploadFile

from api.deps import CommandCtx, CurrentUser, ReadPosition, Services, ServicesDep, created
from api.pagination import PageParams, page_params, paginate
from api.schemas import CancelOut, JobIn, JobOut, ResultOut
from api.views import job_json, log_json, result_json, visible_jobs
from commands.errors import InvalidCommand, NotFound, UnsupportedMediaType
from commands.job_parameters import FILE_FIELDS
from commands.messages import CancelJob, SubmitJob
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
    type: str | None = None,  # noqa: A002 - the contract names the filter ?type=
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
        return paginate(request, conn, stmt.order_by(order, c.id), params, job_json)


async def _read_submission(request: Request, services: Services) -> tuple[JobIn, dict[str, UploadFile]]:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=3, max_fields=20, max_part_size=1024 * 1024)
        files = {k: v for k, v in form.multi_items() if isinstance(v, UploadFile)}
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        try:
            parameters = json.loads(fields.get("parameters") or "{}")
        except ValueError:
            raise InvalidCommand(
                "parameters must be a JSON object", errors=[{"loc": ["body", "parameters"], "msg": "invalid JSON"}]
            ) from None
        raw: dict[str, Any] = {**{k: v for k, v in fields.items() if k != "parameters" and v != ""}, "parameters": parameters}
    elif ctype.startswith("application/json"):
        files = {}
        try:
            raw = await request.json()
        except ValueError:
            raise InvalidCommand("the body is not valid JSON", errors=[{"loc": ["body"], "msg": "invalid JSON"}]) from None
    else:
        raise UnsupportedMediaType("send application/json or multipart/form-data")
    try:
        return JobIn.model_validate(raw), files
    except ValidationError as exc:
        errors = [{"loc": ["body", *map(str, e["loc"])], "msg": e["msg"]} for e in exc.errors()]
        raise InvalidCommand("the job submission is invalid", errors=errors) from None


def _store_files(services: Services, job_type: str, files: dict[str, UploadFile]) -> dict[str, dict[str, Any]]:
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
                max_bytes=services.max_upload_bytes,
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
async def submit_job(request: Request, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Any:
    """Submit a job: JSON ``{project, type, parameters, agent?, priority?}`` or multipart with
    the same fields (``parameters`` as a JSON string) and file fields ``input_file``,
    ``reference_file``, ``image_file``. Nothing is stored when anything is invalid."""
    body, files = await _read_submission(request, services)
    try:
        project_id = UUID(body.project)
    except ValueError:
        raise InvalidCommand("project must be a project id", errors=[{"loc": ["body", "project"], "msg": "not a UUID"}]) from None
    platform = services.platform
    # Validate everything that needs no upload first, so bad input stores nothing.
    await asyncio.to_thread(platform.validate_job, body.type, body.parameters, set(files))
    input_files = await asyncio.to_thread(_store_files, services, body.type, files)
    try:
        job_id, position = await asyncio.to_thread(
            platform.submit_job, SubmitJob(project_id, body.type, body.parameters, input_files, body.priority), ctx
        )
    except BaseException:
        for f in input_files.values():
            services.blobs.delete(f["blob"])
        raise
    return await created(
        services, position, f"/api/jobs/{job_id}/", str(job_id), lambda: job_json(load_job(services, user, str(job_id)))
    )


@router.get("/{job_id}/", response_model=JobOut, dependencies=[ReadPosition])
def get_job(job_id: UUID, services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    """One job."""
    return job_json(load_job(services, user, str(job_id)))


@router.post("/{job_id}/cancel/", status_code=202, response_model=CancelOut)
async def cancel_job(job_id: UUID, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> JSONResponse:
    """Ask a pending or running job to stop: ``cancelled`` (it was pending),
    ``cancel_requested`` (running work stops at its next checkpoint) or ``completed``
    (it finished first). 409 if it already failed or was cancelled."""
    load_job(services, user, str(job_id))
    status, position = await asyncio.to_thread(services.platform.cancel_job, CancelJob(job_id), ctx)
    position = position or 0
    return JSONResponse({"status": status, "position": position}, status_code=202, headers={"Aiorch-Position": str(position)})


def _result_row(services: Services, user: dict[str, Any], job_id: str) -> dict[str, Any]:
    load_job(services, user, job_id)
    with services.engine.connect() as conn:
        row = conn.execute(select(t.job_results).where(t.job_results.c.job_id == job_id)).mappings().first()
    if row is None:
        raise NotFound(f"job {job_id} has no result")
    return dict(row)


@router.get("/{job_id}/result/", response_model=ResultOut, dependencies=[ReadPosition])
def get_result(job_id: UUID, services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    """The job's result (404 until it has one)."""
    row = _result_row(services, user, str(job_id))
    with services.engine.connect() as conn:
        logs = (
            conn.execute(
                select(t.job_logs)
                .where(t.job_logs.c.job_id == str(job_id))
                .order_by(t.job_logs.c.position, t.job_logs.c.seq)
                .limit(1000)
            )
            .mappings()
            .all()
        )
    return result_json(row, [log_json(dict(r)) for r in logs])


def _download(services: Services, blob: dict[str, Any]) -> FileResponse:
    path = services.blobs.path(blob["blob"])
    if not path.exists():
        raise NotFound("the file is no longer stored")
    return FileResponse(path, media_type=blob["content_type"], filename=blob["name"])


@router.get("/{job_id}/result/files/{index}/", response_class=FileResponse)
def download_result(job_id: UUID, index: int, services: ServicesDep, user: CurrentUser) -> FileResponse:
    """Download result file ``index`` (0 is the main file); supports ``Range``."""
    files = _result_row(services, user, str(job_id))["files"]
    if not 0 <= index < len(files):
        raise NotFound(f"job {job_id} has no result file {index}")
    return _download(services, files[index])


@router.get("/{job_id}/files/{field}/", response_class=FileResponse)
def download_input(job_id: UUID, field: str, services: ServicesDep, user: CurrentUser) -> FileResponse:
    """Download an input file of the job; supports ``Range``."""
    files = load_job(services, user, str(job_id))["input_files"] or {}
    if field not in files:
        raise NotFound(f"job {job_id} has no input file {field}")
    return _download(services, files[field])
