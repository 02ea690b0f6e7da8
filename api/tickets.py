"""Tickets of the live feed: one-use WebSocket tickets (``POST /api/ws-ticket/``) and
reusable SSE tickets (``POST /api/sse-ticket/``, kept by their SHA-256), each carrying the
claims of the token it was issued for, so revocation and expiry still apply
(../shared/API.md, *Live feed*). The tables are created by the schema step."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Boolean, Column, DateTime, Engine, MetaData, String, Table, delete, insert, select

metadata = MetaData()

ws_tickets = Table(  # "live_tickets": a ticket now carries its token's claims (revocation, expiry)
    "live_tickets",
    metadata,
    Column("ticket", String(64), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used", Boolean, nullable=False, default=False),
    Column("claims", JSON, nullable=True),
)

sse_tickets = Table(  # tickets of SSE streams (``POST /api/sse-ticket/``), kept by their SHA-256
    "sse_tickets",
    metadata,
    Column("ticket_sha256", String(64), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("job_id", String(36), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("claims", JSON, nullable=False),
)

TICKET_TTL_S = 30
SSE_TICKET_TTL_S = 600


def issue_ticket(engine: Engine, user_id: str, claims: dict[str, Any] | None = None) -> str:
    """A single-use WebSocket ticket for ``user_id``, valid :data:`TICKET_TTL_S` seconds;
    ``claims`` are those of the access token that asked for it (the connection it opens
    lives by them: it closes when that token expires or its session is revoked)."""
    ticket = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(delete(ws_tickets).where(ws_tickets.c.expires_at < datetime.now(UTC)))
        conn.execute(
            insert(ws_tickets).values(
                ticket=ticket,
                user_id=user_id,
                expires_at=datetime.now(UTC) + timedelta(seconds=TICKET_TTL_S),
                claims=claims,
            )
        )
    return ticket


def redeem_ticket(engine: Engine, ticket: str) -> tuple[str, dict[str, Any] | None] | None:
    """``(user id, claims)`` of an unexpired ticket, which is consumed; None otherwise."""
    if len(ticket) > 64:
        return None
    with engine.begin() as conn:
        row = conn.execute(
            delete(ws_tickets)
            .where(ws_tickets.c.ticket == ticket, ws_tickets.c.expires_at >= datetime.now(UTC))
            .returning(ws_tickets.c.user_id, ws_tickets.c.claims)
        ).first()
    return (str(row.user_id), row.claims) if row is not None else None


def issue_sse_ticket(engine: Engine, user_id: str, job_id: str, claims: dict[str, Any]) -> tuple[str, int]:
    """``(ticket, seconds it lives)``: a ticket for the SSE stream of ``job_id`` given to
    ``user_id``, reusable (reconnects) for :data:`SSE_TICKET_TTL_S` seconds but never past
    the expiry of the access token with ``claims`` that asked for it. The stream it opens
    lives by those claims (it ends when the session is revoked or the token expires)."""
    ticket = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    expires_at = min(now + timedelta(seconds=SSE_TICKET_TTL_S), datetime.fromtimestamp(float(claims["exp"]), UTC))
    with engine.begin() as conn:
        conn.execute(delete(sse_tickets).where(sse_tickets.c.expires_at < now))
        conn.execute(
            insert(sse_tickets).values(
                ticket_sha256=hashlib.sha256(ticket.encode()).hexdigest(),
                user_id=user_id,
                job_id=job_id,
                expires_at=expires_at,
                claims=claims,
            )
        )
    return ticket, max(0, int((expires_at - now).total_seconds()))


def sse_ticket_claims(engine: Engine, ticket: str, job_id: str) -> dict[str, Any] | None:
    """The claims an unexpired SSE ``ticket`` of ``job_id``'s stream carries (it stays
    valid for reconnects); None for an unknown or expired ticket, or one of another stream."""
    if len(ticket) > 64:
        return None
    c = sse_tickets.c
    with engine.connect() as conn:
        row = conn.execute(
            select(c.claims).where(
                c.ticket_sha256 == hashlib.sha256(ticket.encode("utf-8", "replace")).hexdigest(),
                c.job_id == job_id,
                c.expires_at >= datetime.now(UTC),
            )
        ).first()
    return dict(row.claims) if row is not None else None
