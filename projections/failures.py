"""Parked events: what a follower could not apply, recorded so that it moves on
(ARCHITECTURE.md invariant 11).

A row of :data:`projections.tables.failures` per (follower name, position): the name is a
projection generation's tracking name (``read_models_g3``) or ``relay``. States: ``parked``
(recorded, not applied), ``retried`` (applied later by an operator), ``skipped`` (given up,
with a reason).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, not_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    PendingRollbackError,
    ResourceClosedError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as SATimeoutError

from projections import tables as t
from projections.generations import REGISTRY_NAME
from projections.sanitize import clean_text

log = logging.getLogger(__name__)

PARKED, RETRIED, SKIPPED = "parked", "retried", "skipped"
RELAY = "relay"
MAX_ERROR_CHARS = 2000
MAX_TOPIC_CHARS = 500
#: ``LIKE`` pattern of the read models' generation names (``read_models_g3``).
GENERATIONS_LIKE = REGISTRY_NAME.replace("_", "\\_") + "\\_g%"

# SQLSTATE classes of errors that say nothing about the event: the connection, the
# server's resources or an operator (08, 53, 57, 58), a serialisation failure or deadlock
# (40), a lock not granted in time (55). A batch failing with one of these is retried
# whole, never parked.
_TRANSIENT_CLASSES = ("08", "40", "53", "55", "57", "58")
# SQLAlchemy's own signs of a connection that broke or a pool that ran dry.
_TRANSIENT_TYPES = (DisconnectionError, PendingRollbackError, ResourceClosedError, SATimeoutError)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a database trouble worth retrying rather than a property of the
    event being applied (lost connection, deadlock, serialisation failure, shutdown)."""
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if sqlstate is None:
            # psycopg errors raised before the server answered (lost connection) have no
            # SQLSTATE; client-side refusals (a NUL byte in text) are DataErrors
            return type(exc.orig).__name__ in ("OperationalError", "InterfaceError")
        return str(sqlstate)[:2] in _TRANSIENT_CLASSES
    return False


def describe(exc: BaseException) -> str:
    """A bounded, storable one-line description of ``exc``: its type and message, without
    the SQL statement and parameters SQLAlchemy appends (they may hold secrets)."""
    cause: BaseException = exc
    if isinstance(exc, StatementError) and exc.orig is not None:
        cause = exc.orig
    text = f"{type(cause).__name__}: {cause}".strip()
    return clean_text(text)[:MAX_ERROR_CHARS]


def park(
    conn: Connection, name: str, position: int, topic: str, error: str, *, state: str = PARKED, reason: str | None = None
) -> None:
    """Record the event at ``position`` that follower ``name`` could not apply, in the
    caller's transaction (``state`` skipped with a ``reason`` when an operator already
    skipped it elsewhere). A record already there is kept as it is."""
    now = datetime.now(UTC)
    row = {
        "name": name,
        "position": position,
        "topic": clean_text(topic or "")[:MAX_TOPIC_CHARS],
        "error": clean_text(error)[:MAX_ERROR_CHARS],
        "at": now,
        "state": state,
        "reason": clean_text(reason)[:MAX_ERROR_CHARS] if reason is not None else None,
        "updated_at": now,
    }
    conn.execute(pg_insert(t.failures).values(row).on_conflict_do_nothing())


def skipped_reason(conn: Connection, position: int, name_like: str) -> str | None:
    """The reason an operator skipped the event at ``position`` for another follower whose
    name is ``LIKE name_like`` (another generation of the same read models), or None."""
    row = conn.execute(
        select(t.failures.c.name, t.failures.c.reason)
        .where(t.failures.c.position == position, t.failures.c.state == SKIPPED, t.failures.c.name.like(name_like))
        .limit(1)
    ).first()
    return f"skipped in {row.name}: {row.reason or ''}" if row else None


def mark(conn: Connection, name: str, position: int, state: str, reason: str | None = None) -> bool:
    """Move a parked event to ``state`` (retried or skipped); returns whether it was parked."""
    values: dict[str, Any] = {"state": state, "updated_at": datetime.now(UTC)}
    if reason is not None:
        values["reason"] = clean_text(reason)[:MAX_ERROR_CHARS]
    result = conn.execute(
        update(t.failures)
        .where(t.failures.c.name == name, t.failures.c.position == position, t.failures.c.state == PARKED)
        .values(**values)
    )
    return bool(result.rowcount)


def refresh_error(conn: Connection, name: str, position: int, error: str) -> None:
    """Store the latest error of a parked event (a failed retry)."""
    conn.execute(
        update(t.failures)
        .where(t.failures.c.name == name, t.failures.c.position == position)
        .values(error=clean_text(error)[:MAX_ERROR_CHARS], updated_at=datetime.now(UTC))
    )


def visible(serving_name: str | None) -> Any:
    """The rows that count for readiness and metrics: the serving generation's and every
    follower's that is not a read-model generation (the relay); a generation being built
    beside the serving one, or left behind, does not count."""
    others = not_(t.failures.c.name.like(GENERATIONS_LIKE))
    return or_(others, t.failures.c.name == serving_name) if serving_name else others


def parked_count(conn: Connection, serving_name: str | None) -> int:
    """How many events are parked now (see :func:`visible`)."""
    stmt = select(func.count()).select_from(t.failures).where(t.failures.c.state == PARKED, visible(serving_name))
    return int(conn.execute(stmt).scalar_one())


def failures(conn: Connection, state: str | None = None) -> list[dict[str, Any]]:
    """Every recorded failure (of ``state`` if given), by position then name:
    ``[{name, position, topic, error, at, state, reason, updated_at}]``."""
    stmt = select(t.failures).order_by(t.failures.c.position, t.failures.c.name)
    if state:
        stmt = stmt.where(t.failures.c.state == state)
    return [dict(r) for r in conn.execute(stmt).mappings()]


__all__ = [
    "GENERATIONS_LIKE",
    "PARKED",
    "RELAY",
    "RETRIED",
    "SKIPPED",
    "describe",
    "failures",
    "is_transient",
    "mark",
    "park",
    "parked_count",
    "refresh_error",
    "skipped_reason",
    "visible",
]
