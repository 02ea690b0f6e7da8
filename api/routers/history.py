"""Audit replay of a job, read from the event store: ``history/``, the ``events/`` feed
(JSON pages or server-sent events, served from the live hub) and ``?as_of=`` time travel
(see jobs.get_job); ``POST /api/sse-ticket/`` for browsers' ``EventSource``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any
from uuid import UUID

import jwt
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel
from starlette.background import BackgroundTask

from api.auth import ALGORITHM
from api.deps import CurrentUser, Services, ServicesDep, bearer, check_token
from api.errors import ServiceUnavailable, problem
from api.history_items import history_item, item_of
from api.job_access import load_job
from api.live import Feed, LiveConnection, Subscriber, token_still_valid
from api.pagination import PageParams, envelope, page_params, page_window
from api.schemas import HistoryItem, Page, events_responses, ok
from api.tickets import issue_sse_ticket, sse_ticket_claims
from api.time_travel import MAX_POSITION, store_history
from commands.errors import Unauthenticated
from events.enums import FINISHED_STATUSES as FINISHED

router = APIRouter(prefix="/api/jobs", tags=["history"])
tickets = APIRouter(tags=["history"])
KEEP_ALIVE_S = 15.0
REPLAY_BATCH = 500  # events read and decoded at a time when a stream replays from the store


def _page(request: Request, services: Services, job_id: UUID, after: int, params: PageParams) -> dict[str, Any]:
    """One page of the job's events after ``after``: counted and fetched in SQL, only the
    page's events decoded."""
    history = store_history(services)
    count = history.count(job_id, after=after)
    number = page_window(params, count)
    entries = history.page(job_id, after=after, limit=params.page_size, offset=(number - 1) * params.page_size)
    return envelope(request, number, params, count, [history_item(p, e) for p, e in entries])


@router.get("/{job_id}/history/", response_model=None, responses=ok(Page[HistoryItem]))
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


class SseTicketIn(BaseModel):
    """The job whose event stream the ticket opens."""

    job: UUID


class SseTicket(BaseModel):
    """A ticket for ``GET /api/jobs/{job}/events/?ticket=``, reusable until it expires."""

    ticket: str
    expires_in: int


@tickets.post("/api/sse-ticket/", status_code=201, response_model=SseTicket)
def sse_ticket(body: SseTicketIn, request: Request, services: ServicesDep, user: CurrentUser) -> SseTicket:
    """A ticket for the server-sent events of one visible job (``?ticket=``), since a browser
    ``EventSource`` cannot send ``Authorization``. It serves that stream's reconnects
    (``Last-Event-ID``) until it expires (``expires_in`` seconds: at most 10 minutes, never
    past the access token that asked for it) or that token's session is revoked."""
    load_job(services, user, str(body.job))
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    claims = services.tokens.decode(token, "access")
    ticket, expires_in = issue_sse_ticket(services.engine, str(user["id"]), str(body.job), claims)
    return SseTicket(ticket=ticket, expires_in=expires_in)


def stream_user(
    job_id: UUID,
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ticket: Annotated[str | None, Query(max_length=64, description="a ticket from POST /api/sse-ticket/")] = None,
) -> tuple[dict[str, Any], str]:
    """``(user row, access token)`` of an events request: from ``Authorization: Bearer``, else
    from ``?ticket=`` (of this job's stream; the token is rebuilt from the ticket's claims).
    Raises Unauthenticated (401)."""
    if credentials is not None:
        token = credentials.credentials
    elif ticket:
        claims = sse_ticket_claims(services.engine, ticket, str(job_id))
        if claims is None:
            raise Unauthenticated("the ticket is unknown, expired or for another stream")
        token = jwt.encode(claims, services.tokens.secret, algorithm=ALGORITHM)
    else:
        raise Unauthenticated("authentication credentials were not provided")
    _claims, user = check_token(services, token, "access")
    user["session"] = _claims.get("rid")
    request.state.user = user
    return user, token


@router.get("/{job_id}/events/", response_model=None, responses=events_responses())
async def job_events(
    job_id: UUID,
    request: Request,
    services: ServicesDep,
    auth: Annotated[tuple[dict[str, Any], str], Depends(stream_user)],
    params: Annotated[PageParams, Depends(page_params)],
    after: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_POSITION)] = None,
) -> Any:
    """The job's feed: with ``Accept: text/event-stream``, server-sent events, else JSON
    pages of events after ``?after=``. Auth: Bearer, or ``?ticket=`` (``POST /api/sse-ticket/``).

    The stream's events are unnamed (``EventSource.onmessage``): ``id:`` the global
    position, ``data:`` the history item. It honours ``Last-Event-ID``, closes after a
    finished job's last event (at once when resumed there), and when the token expires or
    its session is revoked; events come from the live hub (after the read models include
    them). A user has at most ``AIORCH_MAX_LIVE_PER_USER`` live connections (WebSocket and
    SSE) per API process: beyond, 429."""
    user, token = auth
    await asyncio.to_thread(load_job, services, user, str(job_id))
    if "text/event-stream" not in request.headers.get("accept", ""):
        return await asyncio.to_thread(_page, request, services, job_id, after, params)
    hub = services.hub
    if hub is None:
        raise ServiceUnavailable("this API process has no live feed")
    start = max(after, last_event_id or 0)
    claims = services.tokens.decode(token, "access")
    loop = asyncio.get_running_loop()
    revoked = asyncio.Event()
    connection = LiveConnection(str(user["id"]), lambda: token_still_valid(services, token), loop, revoked.set)
    if not hub.open(connection):
        return problem(
            request,
            429,
            "Too many requests",
            f"at most {hub.max_per_user} live connections per user",
            slug="too-many-live-connections",
            headers={"Retry-After": "5"},
        )
    expiry = loop.call_later(max(0.0, float(claims["exp"]) - time.time()), connection.revoke)
    sub = Subscriber(Feed("history", user, str(job_id)), loop, asyncio.Queue(maxsize=hub.queue_size))

    def release() -> None:
        expiry.cancel()
        hub.unsubscribe(sub)
        hub.close(connection)

    return StreamingResponse(
        _sse(services, job_id, start, sub, revoked, release),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(release),  # also when the stream never started
    )


def _frame(item: dict[str, Any]) -> str:
    """One unnamed server-sent event: ``id:`` the position, ``data:`` the item (one line)."""
    return f"id: {item['position']}\ndata: {json.dumps(item, default=str)}\n\n"


def _finished_at(services: Services, job_id: UUID, position: int) -> bool:
    """Whether the job is finished and has no event after ``position`` (blocking)."""
    job = services.platform.get_job(job_id)
    return job.status in FINISHED and not store_history(services).page(job_id, after=position, limit=1)


async def _sse(
    services: Services, job_id: UUID, after: int, sub: Subscriber, revoked: asyncio.Event, release: Callable[[], None]
) -> AsyncIterator[str]:
    """Replay the job's events after ``after`` from the store up to the hub's position, then
    follow the hub; stop when the job is finished and everything is sent, or on revocation."""
    hub = services.hub
    delivered = after
    try:
        upto = hub.subscribe(sub)  # live messages queue up from here: no gap, no duplicate
        history = store_history(services)
        while page := await asyncio.to_thread(history.page, job_id, after=delivered, limit=REPLAY_BATCH):
            for pos, event in page:
                if pos > upto:
                    break
                yield _frame(history_item(pos, event))
                delivered = pos
            if len(page) < REPLAY_BATCH or page[-1][0] > upto:
                break
        if await asyncio.to_thread(_finished_at, services, job_id, delivered):
            return
        revocation = asyncio.ensure_future(revoked.wait())
        try:
            while not revoked.is_set():
                message_task = asyncio.ensure_future(sub.queue.get())
                done, _ = await asyncio.wait(
                    {message_task, revocation}, timeout=KEEP_ALIVE_S, return_when=asyncio.FIRST_COMPLETED
                )
                if message_task not in done:
                    message_task.cancel()
                    if not done:
                        yield ": keep-alive\n\n"
                    continue
                message = message_task.result()
                if message is None:  # too slow to keep up: the client resumes with Last-Event-ID
                    return
                if message["position"] <= delivered:
                    continue
                yield _frame(item_of(message["envelope"]))
                delivered = message["position"]
                row = message["job"]
                if (row is None or row.get("archived") or row.get("status") in FINISHED) and await asyncio.to_thread(
                    _finished_at, services, job_id, delivered
                ):
                    return
        finally:
            revocation.cancel()
    finally:
        release()
