"""The classic stack, as DRF + Celery deployments build it, written the idiomatic FastAPI way:
the peer that ``bench/compare.py`` measures aiorch against in the same run.

Per request: a bearer JWT verified with pyjwt (HS256, ``exp`` and ``sub`` required) and the
user's row read by id (``SELECT … FROM users WHERE id = %s``, as DRF's JWT authentication
does; 401 when missing, bad or inactive), pydantic validation of the body, then one statement
on one pooled connection per request (``psycopg_pool.AsyncConnectionPool``, autocommit):

- ``POST /api/jobs/`` — body ``{project, type, parameters, priority?}`` (tts parameters
  checked: ``text`` 1–20,000 characters); ``INSERT INTO jobs … RETURNING *`` (the project is a
  foreign key), then ``run_job.apply_async`` to Redis once the row is committed (DRF's
  ``transaction.on_commit(task.delay)``), then 201 with the row.
- ``GET /api/jobs/{id}/`` — the caller's job (404 for another's or none).
- ``GET /api/jobs/?page=&page_size=`` — DRF page-number pagination of the caller's jobs,
  newest first: ``{count, next, previous, results}`` (``count(*)`` + ``LIMIT/OFFSET``).
- ``GET /health/live`` — 200 ``{"status": "ok"}``.

Job JSON is aiorch's shape (``api/views.py:job_json``) without signed file links.

Environment: ``CLASSIC_DATABASE_URL`` (libpq URL; :func:`create_schema` made the tables),
``CLASSIC_SECRET`` (HS256 key), ``CLASSIC_REDIS_URL``, ``CLASSIC_POOL_SIZE`` (connections
per worker process, default 10). Run with uvicorn, as many workers as aiorch's API::

    uvicorn bench.classic.app:app --workers 1 --no-access-log
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

import jwt
import psycopg
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field, field_validator

from bench.classic.tasks import run_job

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE IF NOT EXISTS users (
    id uuid PRIMARY KEY, username text UNIQUE NOT NULL, role text NOT NULL,
    is_active boolean NOT NULL DEFAULT true, date_joined timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS projects (
    id uuid PRIMARY KEY, name text NOT NULL, owner_id uuid NOT NULL REFERENCES users(id),
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id uuid NOT NULL REFERENCES projects(id),
    type text NOT NULL, status text NOT NULL DEFAULT 'pending',
    progress integer NOT NULL DEFAULT 0, stage text, priority text NOT NULL DEFAULT 'normal',
    attempt integer NOT NULL DEFAULT 1, parameters jsonb NOT NULL DEFAULT '{}',
    agent_id uuid, input_files jsonb NOT NULL DEFAULT '{}',
    created_by_id uuid NOT NULL REFERENCES users(id), created_by_username text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz, finished_at timestamptz, error jsonb,
    has_result boolean NOT NULL DEFAULT false, cancel_requested boolean NOT NULL DEFAULT false,
    archived boolean NOT NULL DEFAULT false);
CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs (created_by_id, created_at DESC);
"""

JOB_COLUMNS = ("id, project_id, type, status, progress, stage, priority, attempt, parameters, agent_id, "
               "input_files, created_by_id, created_by_username, created_at, updated_at, started_at, "
               "finished_at, error, has_result, cancel_requested")


def create_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the classic stack's tables (idempotent)."""
    conn.execute(SCHEMA)


def token_for(user_id: str, secret: str, lifetime_s: int = 3600) -> str:
    """An HS256 access token for ``user_id`` (``sub``, ``iat``, ``exp``, ``jti``)."""
    now = int(datetime.now().timestamp())
    return jwt.encode({"sub": user_id, "iat": now, "exp": now + lifetime_s, "jti": uuid.uuid4().hex,
                       "token_type": "access"}, secret, algorithm="HS256")


# -- schemas ---------------------------------------------------------------------------------


class TtsParameters(BaseModel):
    """tts: ``{text, language?, voice?}``."""

    text: str = Field(min_length=1, max_length=20_000)
    language: str | None = Field(default=None, max_length=20)
    voice: str | None = Field(default=None, max_length=100)


class JobIn(BaseModel):
    """A submission."""

    project: uuid.UUID
    type: Literal["tts"]
    parameters: dict[str, Any] = Field(default_factory=dict)
    priority: Literal["low", "normal", "high"] = "normal"

    @field_validator("parameters")
    @classmethod
    def _check_parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        return TtsParameters.model_validate(value).model_dump(exclude_none=True)


class CreatedBy(BaseModel):
    id: uuid.UUID
    username: str


class JobOut(BaseModel):
    """aiorch's job shape."""

    id: uuid.UUID
    project: uuid.UUID
    type: str
    status: str
    progress: int
    stage: str | None
    priority: str
    attempt: int
    parameters: dict[str, Any]
    agent: uuid.UUID | None
    input_files: dict[str, Any]
    created_by: CreatedBy
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: dict[str, Any] | None
    has_result: bool
    cancel_requested: bool


class JobPage(BaseModel):
    count: int
    next: str | None
    previous: str | None
    results: list[JobOut]


def job_out(row: dict[str, Any]) -> dict[str, Any]:
    """A jobs row → JobOut's fields."""
    out = dict(row)
    out["project"] = out.pop("project_id")
    out["agent"] = out.pop("agent_id")
    out["created_by"] = {"id": out.pop("created_by_id"), "username": out.pop("created_by_username")}
    return out


# -- app -------------------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    size = int(os.environ.get("CLASSIC_POOL_SIZE", "10"))
    pool = AsyncConnectionPool(os.environ["CLASSIC_DATABASE_URL"], min_size=size, max_size=size, open=False,
                               kwargs={"autocommit": True, "row_factory": dict_row})
    await pool.open(wait=True)
    app.state.pool = pool
    app.state.secret = os.environ["CLASSIC_SECRET"]
    try:
        yield
    finally:
        await pool.close()


app = FastAPI(title="classic stack (bench)", lifespan=lifespan)


async def db(request: Request) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """One pooled connection for the whole request (auth and handler share it)."""
    async with request.app.state.pool.connection() as conn:
        yield conn


Db = Annotated[psycopg.AsyncConnection[Any], Depends(db)]


async def current_user(request: Request, conn: Db) -> dict[str, Any]:
    """The bearer token's user row. 401 when the token is missing, bad or expired, or the
    user is unknown or inactive."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "authentication credentials were not provided")
    try:
        claims = jwt.decode(token, request.app.state.secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.InvalidTokenError as exc:
        raise HTTPException(401, "invalid token") from exc
    cur = await conn.execute("SELECT id, username, role, is_active FROM users WHERE id = %s", (claims["sub"],))
    user = await cur.fetchone()
    if user is None or not user["is_active"]:
        raise HTTPException(401, "the user is unknown or inactive")
    return user


User = Annotated[dict[str, Any], Depends(current_user)]


@app.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/api/jobs/", status_code=201, response_model=JobOut)
async def submit_job(body: JobIn, conn: Db, user: User) -> dict[str, Any]:
    try:
        cur = await conn.execute(
            f"INSERT INTO jobs (project_id, type, parameters, priority, created_by_id, created_by_username) "
            f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {JOB_COLUMNS}",
            (body.project, body.type, Jsonb(body.parameters), body.priority, user["id"],
             user["username"]))
    except psycopg.errors.ForeignKeyViolation as exc:
        raise HTTPException(400, {"project": ["no such project"]}) from exc
    row = await cur.fetchone()
    assert row is not None
    run_job.apply_async(args=[str(row["id"])])  # after the commit (autocommit), like transaction.on_commit
    return job_out(row)


@app.get("/api/jobs/{job_id}/", response_model=JobOut)
async def get_job(job_id: uuid.UUID, conn: Db, user: User) -> dict[str, Any]:
    cur = await conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s AND created_by_id = %s AND NOT archived",
                             (job_id, user["id"]))
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no job {job_id}")
    return job_out(row)


@app.get("/api/jobs/", response_model=JobPage)
async def list_jobs(request: Request, conn: Db, user: User, page: Annotated[int, Query(ge=1)] = 1,
                    page_size: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    cur = await conn.execute("SELECT count(*) AS n FROM jobs WHERE created_by_id = %s AND NOT archived", (user["id"],))
    count_row = await cur.fetchone()
    count = int(count_row["n"]) if count_row else 0
    cur = await conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE created_by_id = %s AND NOT archived "
        f"ORDER BY created_at DESC, id LIMIT %s OFFSET %s", (user["id"], page_size, (page - 1) * page_size))
    rows = await cur.fetchall()

    def link(n: int) -> str:
        return str(request.url.include_query_params(page=n, page_size=page_size))

    return {"count": count, "next": link(page + 1) if page * page_size < count else None,
            "previous": link(page - 1) if page > 1 else None, "results": [job_out(r) for r in rows]}
