"""WebSockets ``/ws/jobs/{id}/``, ``/ws/jobs/``, ``/ws/events/`` and their tickets."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

from api.deps import CurrentUser, Services, ServicesDep, check_token
from api.live import TICKET_TTL_S, Feed, Subscriber, issue_ticket, redeem_ticket, render
from api.views import job_json, visible_jobs
from commands.errors import DomainError
from projections import tables as t

router = APIRouter(tags=["live feed"])
AUTH_TIMEOUT_S, PING_S = 5.0, 25.0
BAD_AUTH, FORBIDDEN = 4401, 4403


class Ticket(BaseModel):
    """A single-use WebSocket ticket."""

    ticket: str
    expires_in: int


@router.post("/api/ws-ticket/", status_code=201, response_model=Ticket)
def ws_ticket(services: ServicesDep, user: CurrentUser) -> Ticket:
    """A single-use ticket (30 s) to open a WebSocket with ``?ticket=``."""
    return Ticket(ticket=issue_ticket(services.engine, user["id"]), expires_in=TICKET_TTL_S)


async def _authenticate(ws: WebSocket, services: Services) -> tuple[dict[str, Any] | None, int | None]:
    """(user row, ``after``) from ``?ticket=`` or a first ``{"type": "auth", "token"}`` message."""
    after = ws.query_params.get("after")
    ticket = ws.query_params.get("ticket")
    try:
        if ticket:
            user_id = await asyncio.to_thread(redeem_ticket, services.engine, ticket)
            if user_id is None:
                return None, None
            with services.engine.connect() as conn:
                from sqlalchemy import select

                row = conn.execute(select(t.users).where(t.users.c.id == user_id)).mappings().first()
            user = dict(row) if row and row["is_active"] else None
        else:
            first = json.loads(await asyncio.wait_for(ws.receive_text(), AUTH_TIMEOUT_S))
            if not isinstance(first, dict) or first.get("type") != "auth" or not isinstance(first.get("token"), str):
                return None, None
            _claims, user = await asyncio.to_thread(check_token, services, first["token"], "access")
            after = first.get("after", after)
        return user, int(after) if after is not None else None
    except (TimeoutError, ValueError, DomainError, WebSocketDisconnect):
        return None, None


async def _serve(ws: WebSocket, kind: str, job_id: str | None = None) -> None:
    services: Services = ws.app.state.services
    await ws.accept()
    user, after = await _authenticate(ws, services)
    if user is None:
        await ws.close(code=BAD_AUTH)
        return
    if kind == "events" and user["role"] != "admin":
        await ws.close(code=FORBIDDEN)
        return
    if kind == "job":
        from sqlalchemy import select

        with services.engine.connect() as conn:
            visible = conn.execute(visible_jobs(select(t.jobs.c.id), user).where(t.jobs.c.id == job_id)).first()
        if visible is None:
            await ws.close(code=FORBIDDEN)
            return
    feed = Feed(kind, user, job_id)
    hub = services.hub
    sub = Subscriber(feed, asyncio.get_running_loop(), asyncio.Queue(maxsize=hub.queue_size))
    upto = hub.subscribe(sub)
    metrics = getattr(ws.app.state, "metrics", None)
    if metrics is not None:
        metrics.ws_connections += 1
    delivered = after or 0
    serving = asyncio.current_task()

    async def watch_client() -> None:
        """Cancel the sender as soon as the client goes away."""
        with contextlib.suppress(Exception):
            while True:
                await ws.receive_text()
        if serving is not None:
            serving.cancel()

    watcher = asyncio.create_task(watch_client())

    async def send(message: dict[str, Any]) -> None:
        nonlocal delivered
        if message.get("job") is not None:
            message = {**message, "job": job_json(message["job"], services.signer.for_user(user))}
        await ws.send_text(json.dumps(message, default=str))
        delivered = message["position"]

    try:
        if after is not None:
            for replayed in await asyncio.to_thread(_replay, services, feed, after, upto):
                await send(replayed)
        while True:
            try:
                message = await asyncio.wait_for(sub.queue.get(), PING_S)
            except TimeoutError:
                await ws.send_text(json.dumps({"type": "ping"}))
                continue
            if message is None:
                await ws.send_text(json.dumps({"type": "resync_required", "position": delivered}))
                await ws.close(code=1013)
                return
            await send(message)
    except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
        pass
    finally:
        hub.unsubscribe(sub)
        watcher.cancel()
        if metrics is not None:
            metrics.ws_connections -= 1


def _replay(services: Services, feed: Feed, after: int, upto: int) -> list[dict[str, Any]]:
    """Messages for ``feed`` of every event in (after, upto], from the store, in order."""
    hub = services.hub
    out: list[dict[str, Any]] = []
    position = after
    while position < upto:
        if feed.kind == "job" and feed.job_id:
            batch = [n for n in _job_notifications(services, feed.job_id, position) if n.id <= upto]
        else:
            batch = list(services.platform.recorder.select_notifications(position, 500, stop=upto, inclusive_of_start=False))
        if not batch:
            break
        for aggregate_id, row, envelope in hub.messages(batch):
            if feed.wants(aggregate_id, row):
                out.append(render(feed, row, envelope))
        position = batch[-1].id
        if feed.kind == "job":
            break
    return out


def _job_notifications(services: Services, job_id: str, after: int) -> list[Any]:
    recorder: Any = services.platform.recorder
    sql = (
        f'SELECT notification_id AS id, originator_id, originator_version, topic, state FROM "{recorder.events_table_name}" '
        "WHERE originator_id = %s AND notification_id > %s ORDER BY originator_version"
    )
    from uuid import UUID

    from eventsourcing.persistence import Notification

    with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(sql, (UUID(job_id), after))
        return [
            Notification(
                id=r["id"],
                originator_id=r["originator_id"],
                originator_version=r["originator_version"],
                topic=r["topic"],
                state=bytes(r["state"]),
            )
            for r in curs.fetchall()
        ]


@router.websocket("/ws/jobs/{job_id}/")
async def ws_job(websocket: WebSocket, job_id: str) -> None:
    """One job's events, live (``?after=P`` first replays what came after P)."""
    await _serve(websocket, "job", job_id)


@router.websocket("/ws/jobs/")
async def ws_jobs(websocket: WebSocket) -> None:
    """Every event of the jobs the user may see."""
    await _serve(websocket, "jobs")


@router.websocket("/ws/events/")
async def ws_events(websocket: WebSocket) -> None:
    """Every stored event as its envelope (admins)."""
    await _serve(websocket, "events")
