"""A job submission as it arrives: JSON, a urlencoded form or a multipart body whose files
stream straight into blob storage. Parsed here once, then handed to
:meth:`commands.service.Platform.submit_job`, which validates it (and runs
``prepare_submission``) once. Stored files of a submission that does not become a job are
deleted again."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

from fastapi import Request
from pydantic import ValidationError

from api.deps import Services, SignedInUser, StoredFile
from api.errors import InvalidRequest
from api.schemas import JobIn, Priority
from api.uploads import FIELDS_BYTES, MultipartReader
from commands.base import Position
from commands.context import Context
from commands.errors import UnsupportedMediaType, invalid
from commands.job_files import check_file
from commands.messages import SubmitJob
from commands.permissions import require_writer
from events import JOB_TYPES

MAX_PARTS = 20


def _job_in_doc() -> dict[str, Any]:
    """The JSON body's schema: :class:`JobIn` with the type and priority named as enums
    (the handler refuses other values with 422)."""
    schema = JobIn.model_json_schema()
    schema["properties"]["type"]["enum"] = list(JOB_TYPES)
    schema["properties"]["priority"]["enum"] = [p.value for p in Priority]
    return schema


#: ``openapi_extra`` of the submit route: its JSON and multipart bodies.
SUBMISSION_DOC = {
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


@dataclass(frozen=True)
class Submission:
    """A parsed submission: the command to send and the files it staged."""

    command: SubmitJob
    files: dict[str, StoredFile]


def drop(services: Services, files: dict[str, StoredFile]) -> None:
    """Delete stored files of a submission that did not become a job."""
    for blob in files.values():
        services.blobs.delete(blob.key)


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
                raise invalid(part.name, "sent twice", f"the file {part.name!r} was sent twice")
            job_type = fields.get("type")
            check_file(job_type, part.name)
            stored[part.name] = await services.blobs.save_stream(
                reader.data(),
                part.filename or part.name,
                max_bytes=limit,
                accept=functools.partial(check_file, job_type, part.name) if job_type else None,
            )
    except BaseException:
        drop(services, stored)
        raise
    return fields, stored


def _form_fields(fields: dict[str, str]) -> dict[str, Any]:
    """A form's text fields as the JSON body would hold them (``parameters`` and a
    ``webhook_events`` list decoded from JSON). Raises InvalidCommand."""
    try:
        parameters = json.loads(fields.get("parameters") or "{}")
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        raise invalid("parameters", "invalid JSON", "parameters must be a JSON object") from None
    raw: dict[str, Any] = {**{k: v for k, v in fields.items() if k != "parameters" and v != ""}, "parameters": parameters}
    if isinstance(raw.get("webhook_events"), str) and raw["webhook_events"].lstrip().startswith("["):
        try:  # a JSON list (else comma-separated, split by JobIn)
            raw["webhook_events"] = json.loads(raw["webhook_events"])
        except (ValueError, RecursionError):
            raise invalid("webhook_events", "invalid JSON", "webhook_events must be a JSON list") from None
    return raw


async def _read_body(request: Request, services: Services, limit: int) -> tuple[dict[str, Any], dict[str, StoredFile]]:
    """The submission's fields (not yet validated) and its stored files. Raises
    InvalidCommand, UnsupportedMediaType, PayloadTooLarge (nothing stays stored then)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        fields, files = await _read_multipart(request, services, limit)
    elif ctype.startswith("application/x-www-form-urlencoded"):  # bounded by AIORCH_MAX_BODY_BYTES (api.limits)
        fields, files = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)), {}
    elif ctype.startswith("application/json"):
        try:
            return await request.json(), {}
        except (ValueError, RecursionError):
            raise invalid((), "invalid JSON", "the body is not valid JSON") from None
    else:
        raise UnsupportedMediaType("send application/json, application/x-www-form-urlencoded or multipart/form-data")
    try:
        return _form_fields(fields), files
    except BaseException:
        drop(services, files)
        raise


def _job_in(raw: Any) -> JobIn:
    try:
        return JobIn.model_validate(raw)
    except ValidationError as exc:
        errors = [{"loc": ["body", *map(str, e["loc"])], "msg": e["msg"]} for e in exc.errors()]
        raise InvalidRequest("the job submission is invalid", errors) from None


def request_hash(body: JobIn, input_files: dict[str, dict[str, Any]]) -> str:
    """SHA-256 (hex) of what identifies a request for ``Idempotency-Key`` replays: project,
    type, parameters, agent, priority, the files' SHA-256 and (when given) the webhook.
    Stored with each job: it must stay computed the same way."""
    identity = [
        body.project,
        body.type,
        body.parameters,
        body.agent,
        body.priority,
        {f: d["sha256"] for f, d in input_files.items()},
        *([body.webhook, body.webhook_events] if body.webhook or body.webhook_events else []),
    ]
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _command(body: JobIn, files: dict[str, StoredFile], idempotency_key: str | None) -> SubmitJob:
    try:
        project_id = UUID(body.project)
        agent_id = UUID(body.agent) if body.agent else None
    except ValueError:
        raise invalid("project", "not a UUID", "project and agent must be ids") from None
    input_files = {field: blob.describe() for field, blob in files.items()}
    return SubmitJob(
        project_id,
        body.type,
        body.parameters,
        input_files,
        body.priority,
        agent_id,
        idempotency_key or None,
        request_hash(body, input_files),
        webhook=body.webhook,
        webhook_events=body.webhook_events,
    )


async def read_submission(request: Request, services: Services, user: SignedInUser, idempotency_key: str | None) -> Submission:
    """Parse a submission and stage its files (each at most the user's upload limit).
    Viewers are refused before a byte of the body is read.

    Raises Forbidden, InvalidCommand, UnsupportedMediaType, PayloadTooLarge; nothing stays
    stored then."""
    require_writer(user.actor)
    limit = await asyncio.to_thread(services.upload_limit, user.id)
    raw, files = await _read_body(request, services, limit)
    try:
        return Submission(_command(_job_in(raw), files, idempotency_key), files)
    except BaseException:
        drop(services, files)
        raise


async def submit(services: Services, submission: Submission, ctx: Context) -> tuple[UUID, Position]:
    """Send the submission's command; ``(job id, position)``. Its files are deleted when it
    is refused, and when it replays an earlier job (whose files are the job's).
    Raises what ``submit_job`` raises."""
    cmd = submission.command
    try:
        job_id, position = await services.command(services.platform.submit_job, cmd, ctx)
    except BaseException:
        drop(services, submission.files)
        raise
    if cmd.idempotency_key and (await asyncio.to_thread(services.platform.get_job, job_id)).input_files != cmd.input_files:
        drop(services, submission.files)  # a replay: the first submission's files are the job's
    return job_id, position
