"""Audit replay of a job, read from the event store: ``history/``, the ``events/`` feed
(JSON pages or server-sent events) and ``?as_of=`` time travel (see jobs.get_job)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from api.deps import CurrentUser, Services, ServicesDep
from api.errors import problem
from api.job_access import load_job
from api.live import LiveConnection, token_still_valid
from api.pagination import PageParams, page_params
from commands.errors import InvalidCommand, NotFound
from commands.job import FINISHED, Job
from events import to_envelope

router = APIRouter(prefix="/api/jobs", tags=["history"])
SSE_POLL_S = 0.2
MAX_AS_OF_CHARS = 64  # the longest ISO 8601 time is about 35 characters
MAX_POSITION = 2**63 - 1  # positions are PostgreSQL bigints


def history_item(position: int, event: Any) -> dict[str, Any]:
    """``{position, version, type, occurred_at, actor, correlation_id, data}``."""
    env = to_envelope(event, position)
    return {
        "position": position,
        "version": env["version"],
        "type": env["type"],
        "occurred_at": env["occurred_at"],
        "actor": env["actor"],
        "correlation_id": env["correlation_id"],
        "data": env["data"],
    }


def _page(request: Request, services: Services, job_id: UUID, after: int, params: PageParams) -> dict[str, Any]:
    events = services.platform.history(job_id, after=after, limit=100_000)
    items = [history_item(p, e) for p, e in events]
    start = (params.page - 1) * params.page_size
    page = items[start : start + params.page_size]

    def link(n: int) -> str:
        return str(request.url.include_query_params(page=n, page_size=params.page_size))

    return {
        "count": len(items),
        "next": link(params.page + 1) if start + params.page_size < len(items) else None,
        "previous": link(params.page - 1) if params.page > 1 else None,
        "results": page,
    }


@router.get("/{job_id}/history/")
def job_history(
    job_id: UUID,
    request: Request,
    services: ServicesDep,
    user: CurrentUser,
    params: Annotated[PageParams, Depends(page_params)],
    after: Annotated[int, Query(ge=0, le=MAX_POSITION, description="only events after this global position")] = 0,
) -> dict[str, Any]:
    """Every stored event of the job, in order, from the event store (paginated)."""
    load_job(services, user, str(job_id))
    return _page(request, services, job_id, after, params)


def fold_as_of(services: Services, job_id: UUID, as_of: str) -> Job:
    """The job folded from its events up to a global position or an ISO 8601 time.

    Raises InvalidCommand (unparsable ``as_of``), NotFound (the job did not exist then).
    """
    bad = InvalidCommand(
        "as_of must be a position or an ISO 8601 time",
        errors=[{"loc": ["query", "as_of"], "msg": "not a position or time"}],
    )
    position: int | None = None
    when: datetime | None = None
    if len(as_of) > MAX_AS_OF_CHARS or not as_of.isascii():
        raise bad
    if as_of.isdigit():
        position = int(as_of)  # ASCII digits only ("²" is a digit to str.isdigit), ≤ 64 of them
    else:
        try:
            when = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
        except ValueError:
            raise bad from None
        if when.tzinfo is None:
            raise InvalidCommand("as_of needs a time zone", errors=[{"loc": ["query", "as_of"], "msg": "add Z or +00:00"}])
    events = services.platform.history(job_id, limit=1_000_000)
    if position is not None:
        version = max((e.originator_version for p, e in events if p <= position), default=0)
    else:
        assert when is not None
        version = max((e.originator_version for _, e in events if e.timestamp <= when), default=0)
    if version == 0:
        raise NotFound(f"job {job_id} did not exist then")
    job: Job = services.platform.repository.get(job_id, version=version)
    return job


@router.get("/{job_id}/events/", responses={200: {"content": {"text/event-stream": {}, "application/json": {}}}})
async def job_events(
    job_id: UUID,
    request: Request,
    services: ServicesDep,
    user: CurrentUser,
    params: Annotated[PageParams, Depends(page_params)],
    after: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_POSITION)] = None,
) -> Any:
    """The job's feed: with ``Accept: text/event-stream``, server-sent events (``id`` is the
    global position; honours ``Last-Event-ID``; closes after a finished job's last event,
    and when the token expires or its session is revoked), else JSON pages of events after
    ``?after=``. A user has at most ``AIORCH_MAX_LIVE_PER_USER`` live connections (WebSocket
    and SSE) per API process: beyond, 429."""
    await asyncio.to_thread(load_job, services, user, str(job_id))
    if "text/event-stream" not in request.headers.get("accept", ""):
        return await asyncio.to_thread(_page, request, services, job_id, after, params)
    start = max(after, last_event_id or 0)
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    claims = services.tokens.decode(token, "access")
    loop = asyncio.get_running_loop()
    revoked = asyncio.Event()
    connection = LiveConnection(str(user["id"]), lambda: token_still_valid(services, token), loop, revoked.set)
    hub = services.hub
    if hub is not None and not hub.open(connection):
        return problem(
            request,
            429,
            "Too many requests",
            f"at most {hub.max_per_user} live connections per user",
            slug="too-many-live-connections",
            headers={"Retry-After": "5"},
        )
    expiry = loop.call_later(max(0.0, float(claims["exp"]) - time.time()), connection.revoke)

    def release() -> None:
        expiry.cancel()
        if hub is not None:
            hub.close(connection)

    return StreamingResponse(
        _sse(request, services, job_id, start, revoked, release),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(release),  # also when the stream never started
    )


async def _sse(
    request: Request, services: Services, job_id: UUID, after: int, revoked: asyncio.Event, release: Callable[[], None]
) -> AsyncIterator[str]:
    position = after
    idle = 0.0
    try:
        while not revoked.is_set() and not await request.is_disconnected():
            events = await asyncio.to_thread(services.platform.history, job_id, after=position, limit=500)
            for pos, event in events:
                position = pos
                yield f"id: {pos}\nevent: {type(event).__name__}\ndata: {json.dumps(history_item(pos, event))}\n\n"
            if events:
                idle = 0.0
                job = await asyncio.to_thread(services.platform.get_job, job_id)
                if job.status in FINISHED and job.version == events[-1][1].originator_version:
                    return
                continue
            idle += SSE_POLL_S
            if idle >= 15:
                idle = 0.0
                yield ": keep-alive\n\n"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(revoked.wait(), SSE_POLL_S)
    finally:
        release()
