"""The command audit log: every command attempt, including those refused for permission
or validation, in an append-only table beside the event store (refused commands are not
domain events). Request bodies are never stored, so secrets cannot leak into it."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, Column, DateTime, Engine, Index, Integer, MetaData, String, Table, func, insert, select
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response

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
    """The command a request attempted: its route's endpoint name in CamelCase."""
    endpoint = request.scope.get("endpoint")
    name = getattr(endpoint, "__name__", "") or request.url.path
    return "".join(part.capitalize() for part in name.split("_"))


class AuditMiddleware(BaseHTTPMiddleware):
    """Records each POST/PUT/PATCH/DELETE under ``/api/`` after it is answered."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and request.url.path.startswith("/api/"):
            user = getattr(request.state, "user", None) or {}
            params = request.scope.get("path_params") or {}
            target = getattr(request.state, "audit_target", None) or "/".join(str(v) for v in params.values()) or None
            row = {
                "at": datetime.now(UTC),
                "actor_id": user.get("id"),
                "actor_username": user.get("username"),
                "command": command_name(request),
                "target": target,
                "outcome": outcome_of(response.status_code),
                "status": response.status_code,
                "request_id": getattr(request.state, "request_id", ""),
            }
            metrics = getattr(request.app.state, "metrics", None)
            if metrics is not None:
                metrics.commands.labels(row["command"], row["outcome"]).inc()
                metrics.command_seconds.labels(row["command"]).observe(time.perf_counter() - started)
            try:
                engine: Engine = request.app.state.services.engine
                with engine.begin() as conn:
                    conn.execute(insert(audit_log).values(row))
            except Exception:  # an audit write must not turn an answer into an error
                log.exception("could not record the audit row %s", row)
        return response


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
