"""WebSockets ``/ws/jobs/{id}/``, ``/ws/jobs/``, ``/ws/events/`` and their tickets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any
from uuid import UUID

import jwt
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel
from starlette.websockets import WebSocketState

from api.auth import ALGORITHM
from api.deps import CurrentUser, Services, ServicesDep, check_token
from api.live import Feed, LiveConnection, Subscriber, render, text_key, token_still_valid
from api.tickets import TICKET_TTL_S, issue_ticket, redeem_ticket
from api.views import job_json
from commands.errors import DomainError
from projections.queries import job_by_id

log = logging.getLogger(__name__)

router = APIRouter(tags=["live feed"])
AUTH_TIMEOUT_S, PING_S = 5.0, 25.0
BAD_AUTH, FORBIDDEN, TOO_MANY = 4401, 4403, 4429
MAX_POSITION_DIGITS = 19  # positions are PostgreSQL bigints


class Ticket(BaseModel):
    """A single-use WebSocket ticket."""

    ticket: str
    expires_in: int


@router.post("/api/ws-ticket/", status_code=201, response_model=Ticket)
def ws_ticket(request: Request, services: ServicesDep, user: CurrentUser) -> Ticket:
    """A single-use ticket (30 s) to open a WebSocket with ``?ticket=``; the connection
    lives as long as the access token that asked for it (expiry, logout, deactivation)."""
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    claims = services.tokens.decode(token, "access")
    return Ticket(ticket=issue_ticket(services.engine, user["id"], claims), expires_in=TICKET_TTL_S)


def parse_after(value: Any) -> int | None:
    """A resume position: a non-negative integer (or its decimal string), None when absent.

    Raises ValueError for anything else (a list, a bool, a negative or huge number)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("after must be a non-negative integer")
    if isinstance(value, int):
        if 0 <= value < 2**63:
            return value
        raise ValueError("after must be a non-negative integer")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= MAX_POSITION_DIGITS:
        return int(value)
    raise ValueError("after must be a non-negative integer")


#: ``(user row, after, access token, expiry in Unix seconds)`` of an authenticated WebSocket
Auth = tuple[dict[str, Any], int | None, str, float]


async def _authenticate(ws: WebSocket, services: Services) -> Auth | None:
    """``(user row, after, access token, expiry in Unix seconds)`` from ``?ticket=`` or a
    first ``{"type": "auth", "token", "after"?}`` message; None for bad auth of any kind
    (unknown ticket, bad JSON, a wrong ``after``...)."""
    try:
        after = parse_after(ws.query_params.get("after"))
        ticket = ws.query_params.get("ticket")
        if ticket:
            redeemed = await asyncio.to_thread(redeem_ticket, services.engine, ticket)
            if redeemed is None or not redeemed[1]:
                return None
            token = _token_of(services, redeemed[1])
        else:
            first = json.loads(await asyncio.wait_for(ws.receive_text(), AUTH_TIMEOUT_S))
            if not isinstance(first, dict) or first.get("type") != "auth" or not isinstance(first.get("token"), str):
                return None
            token = first["token"]
            if "after" in first:
                after = parse_after(first["after"])
        claims, user = await asyncio.to_thread(check_token, services, token, "access")
        return user, after, token, float(claims["exp"])
    except (TimeoutError, ValueError, TypeError, KeyError, DomainError, WebSocketDisconnect):
        return None
    except Exception:  # e.g. a ticket the database refuses: still bad auth, never a 1006
        log.warning("WebSocket authentication failed", exc_info=True)
        return None


def _token_of(services: Services, claims: dict[str, Any]) -> str:
    """The access token with ``claims`` (a ticket keeps its token's claims, not the token)."""
    return jwt.encode(claims, services.tokens.secret, algorithm=ALGORITHM)


def _visible(services: Services, user: dict[str, Any], job_id: str | None) -> bool:
    try:
        UUID(str(job_id))
    except ValueError:
        return False
    return job_by_id(services.engine, str(job_id), user) is not None


async def _accepted(ws: WebSocket) -> None:
    """Complete the handshake unless it is complete already."""
    if ws.client_state == WebSocketState.CONNECTING:
        await ws.accept()


async def _admit(ws: WebSocket, services: Services, kind: str, job_id: str | None) -> Auth | None:
    """Authenticate the WebSocket; None once it is closed: 4401 for bad auth, 4403 for
    ``/ws/events/`` of a non-admin or a job the user may not see. A ``?ticket=`` connection
    is authenticated before the handshake completes (the caller completes it once
    subscribed: every event stored after the client's connect returned reaches it); one
    that authenticates by its first message is accepted first (its ``after`` closes the gap)."""
    if not ws.query_params.get("ticket"):
        await ws.accept()
    auth = await _authenticate(ws, services)
    if auth is None:
        await _accepted(ws)
        await ws.close(code=BAD_AUTH)
        return None
    user = auth[0]
    if (kind == "events" and user["role"] != "admin") or (
        kind == "job" and not await asyncio.to_thread(_visible, services, user, job_id)
    ):
        await _accepted(ws)
        await ws.close(code=FORBIDDEN)
        return None
    return auth


async def _watch_client(ws: WebSocket, serving: asyncio.Task[Any] | None) -> None:
    """Cancel the sender as soon as the client goes away."""
    with contextlib.suppress(Exception):
        while True:
            await ws.receive_text()
    if serving is not None:
        serving.cancel()


async def _stream(ws: WebSocket, services: Services, sub: Subscriber, user: dict[str, Any], after: int | None, upto: int) -> None:
    """Send what the feed missed since ``after`` (up to ``upto``), then live messages, with a
    ping every ``PING_S`` s; a subscriber that fell behind is told ``resync_required`` and
    closed with 1013. Returns only then; raises WebSocketDisconnect or CancelledError."""
    delivered = after or 0
    texts = services.hub.texts

    async def send(message: dict[str, Any], *, shared: bool = True) -> None:
        """Send ``message``; a live one's text is made once for every connection that gets
        the same (:func:`api.live.text_key`), a replayed one's for this connection."""
        nonlocal delivered
        key = text_key(sub.feed, message) if shared else None
        text = texts.get(key) if key is not None else None
        if text is None:
            if message.get("job") is not None:
                message = {**message, "job": job_json(message["job"], services.signer.for_user(user))}
            text = json.dumps(message, default=str)
            if key is not None:
                texts.put(key, text)
        await ws.send_text(text)
        delivered = message["position"]

    if after is not None:
        for replayed in await asyncio.to_thread(_replay, services, sub.feed, after, upto):
            await send(replayed, shared=False)
    while True:
        try:
            message = sub.queue.get_nowait()  # no timer per message while the queue holds some,
            await asyncio.sleep(0)  # but a yield: other connections and a cancel get their turn
        except asyncio.QueueEmpty:
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


async def _serve(ws: WebSocket, kind: str, job_id: str | None = None) -> None:
    services: Services = ws.app.state.services
    auth = await _admit(ws, services, kind, job_id)
    if auth is None:
        return
    user, after, token, expires_at = auth
    hub = services.hub
    loop = asyncio.get_running_loop()
    serving = asyncio.current_task()

    def on_revoke() -> None:
        if serving is not None:
            serving.cancel()

    connection = LiveConnection(str(user["id"]), lambda: token_still_valid(services, token), loop, on_revoke)
    if not hub.open(connection):
        await _accepted(ws)
        await ws.close(code=TOO_MANY, reason="too many live connections")
        return
    expiry = loop.call_later(max(0.0, expires_at - time.time()), connection.revoke)
    sub = Subscriber(Feed(kind, user, job_id), loop, asyncio.Queue(maxsize=hub.queue_size))
    try:
        upto = hub.subscribe(sub)
        await _accepted(ws)
    except BaseException:
        expiry.cancel()
        hub.unsubscribe(sub)
        hub.close(connection)
        raise
    metrics = getattr(ws.app.state, "metrics", None)
    if metrics is not None:
        metrics.ws_connections += 1
    watcher = asyncio.create_task(_watch_client(ws, serving))
    try:
        await _stream(ws, services, sub, user, after, upto)
    except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
        if connection.revoked:  # token expired, session revoked or user deactivated
            if serving is not None:
                serving.uncancel()
            with contextlib.suppress(Exception):
                await ws.close(code=BAD_AUTH, reason="the token expired or was revoked")
    finally:
        expiry.cancel()
        hub.unsubscribe(sub)
        hub.close(connection)
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
