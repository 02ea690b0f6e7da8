"""The command audit log: every command attempt, including those refused for permission
or validation, in an append-only table beside the event store (refused commands are not
domain events). Request bodies are never stored, so secrets cannot leak into it."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Engine, Index, Integer, MetaData, String, Table, func, insert, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import without_controls

log = logging.getLogger(__name__)
metadata = MetaData()

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor_id", String(64)),
    Column("actor_username", String(150)),
    Column("command", String(80), nullable=False),
    Column("target", String(300)),
    Column("outcome", String(10), nullable=False),
    Column("status", Integer, nullable=False),
    Column("request_id", String(200), nullable=False),
    Index("ix_audit_log_command_target_at", "command", "target", "at"),
    Index("ix_audit_log_actor_at", "actor_id", "at"),
)

_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  RAISE EXCEPTION USING MESSAGE = 'audit_log is append-only: ' || TG_OP || ' refused', ERRCODE = 'insufficient_privilege';
END $$;
"""
_TRIGGERS = {
    "audit_log_no_change": "BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW",
    "audit_log_no_truncate": "BEFORE TRUNCATE ON audit_log FOR EACH STATEMENT",
}


def create_audit_table(engine: Engine) -> None:
    """Create the table and the triggers that refuse UPDATE, DELETE (per row) and TRUNCATE
    (per statement). Run by the database owner: the triggers and their function are then
    the owner's, out of reach of the application role (which may only SELECT, INSERT and
    UPDATE, the last refused by the trigger)."""
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(_APPEND_ONLY)
        present = set(conn.exec_driver_sql("SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass").scalars())
        for name, timing in _TRIGGERS.items():
            if name not in present:
                conn.exec_driver_sql(f"CREATE TRIGGER {name} {timing} EXECUTE FUNCTION audit_log_append_only()")


def outcome_of(status: int) -> str:
    """ok (2xx/3xx), refused (401/403/404/429), invalid (400/413/415/422), conflict (409), error."""
    if status < 400:
        return "ok"
    if status in (401, 403, 404, 429):
        return "refused"
    if status == 409:
        return "conflict"
    if status in (400, 413, 415, 422):
        return "invalid"
    return "error"


def command_name(request: Request) -> str:
    """The command a request attempted: its route's endpoint name in CamelCase (empty when
    no route matched)."""
    name = getattr(request.scope.get("endpoint"), "__name__", "")
    return "".join(part.capitalize() for part in name.split("_"))


COMMAND_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_command(request: Request, status: int) -> bool:
    """Whether a request is a command attempt to audit: a POST/PUT/PATCH/DELETE under
    ``/api/`` that reached a route accepting its method. Unknown paths, methods a route does
    not take (405) and 404s without a user are not: anonymous clients cannot grow the log
    with made-up paths, while every real attempt, refused ones included, is recorded."""
    if request.method not in COMMAND_METHODS or not request.url.path.startswith("/api/"):
        return False
    if request.scope.get("endpoint") is None or status == 405:
        return False
    return not (status == 404 and not getattr(request.state, "user", None))


class AuditMiddleware:
    """Records each command attempt (see :func:`is_command`) when it is answered, before
    the answer reaches the client (so a client that saw a refusal finds it in the log), and
    counts it in the ``aiorch_commands`` metrics. An exception no handler took is recorded
    with status 500 and re-raised. Pure ASGI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in COMMAND_METHODS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        recorded = False

        async def record(status: int) -> None:
            nonlocal recorded
            recorded = True
            request = Request(scope)
            if is_command(request, status):
                await _record(request, status, time.perf_counter() - started)

        async def send_after_record(message: Message) -> None:
            if message["type"] == "http.response.start" and not recorded:
                await record(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_after_record)
        except Exception:
            if not recorded:
                await record(500)
            raise


async def _record(request: Request, status: int, seconds: float) -> None:
    user: dict[str, Any] = getattr(request.state, "user", None) or {}
    params = request.scope.get("path_params") or {}
    target = getattr(request.state, "audit_target", None) or "/".join(str(v) for v in params.values()) or None
    row = {
        "at": datetime.now(UTC),
        "actor_id": user.get("id"),
        "actor_username": user.get("username"),
        "command": command_name(request),
        "target": without_controls(target)[:300] if target else None,
        "outcome": outcome_of(status),
        "status": status,
        "request_id": getattr(request.state, "request_id", ""),
    }
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.commands.labels(row["command"], row["outcome"]).inc()
        metrics.command_seconds.labels(row["command"]).observe(seconds)
    engine: Engine = request.app.state.services.engine

    def write() -> None:
        with engine.begin() as conn:
            conn.execute(insert(audit_log).values(row))

    try:
        await run_in_threadpool(write)
    except Exception:  # an audit write must not turn an answer into an error
        log.exception("could not record the audit row %s", row)


def recent_failures(engine: Engine, username: str, window_s: float = 300.0) -> tuple[int, datetime | None]:
    """Failed logins for ``username`` in the last ``window_s`` seconds: (count, oldest time)."""
    since = datetime.now(UTC) - timedelta(seconds=window_s)
    with engine.connect() as conn:
        count, oldest = conn.execute(
            select(func.count(), func.min(audit_log.c.at)).where(
                audit_log.c.command == "ObtainToken",
                audit_log.c.target == username.lower(),
                audit_log.c.outcome != "ok",
                audit_log.c.status == 401,
                audit_log.c.at >= since,
            )
        ).one()
    return int(count), oldest


__all__ = ["AuditMiddleware", "audit_log", "create_audit_table", "recent_failures"]
