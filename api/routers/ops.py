"""Operations: engines catalogue, health, Prometheus metrics and the command audit log."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.audit import audit_log
from api.deps import CommandCtx, CurrentUser, ReadPosition, Services, ServicesDep, after_write
from api.pagination import PageParams, page_params, paginate
from api.schemas import METRICS, AuditEntry, DeadLetter, EngineOut, Lagging, Live, Page, Ready, Redriven, ok
from api.views import iso
from commands.errors import NotFound
from commands.messages import RetryJob
from commands.permissions import require_admin
from projections import tables as t
from projections.failures import PARKED, parked_count, visible
from projections.generations import serving_generation, tracking_name

router = APIRouter(tags=["operations"])


UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """The API process's Prometheus registry: requests, command outcomes and latencies
    counted here, lags and job figures read from the store and read models at scrape time.
    Every label comes from a bounded set (route templates, command names, method names,
    status codes): what a client sends never becomes a label."""

    def __init__(self, services: Services) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aiorch_http_requests",
            f"HTTP requests by route template ({UNMATCHED!r} for paths no route matched), method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.commands = Counter(
            "aiorch_commands", "Command attempts by command and outcome", ["command", "outcome"], registry=self.registry
        )
        self.command_seconds = Histogram(
            "aiorch_command_seconds", "Command latency (request to answer), seconds", ["command"], registry=self.registry
        )
        self.ws_connections = 0
        self.registry.register(_StoreCollector(services, self))


def route_label(scope: Scope) -> str:
    """The template of the route that answered (e.g. ``/api/jobs/{job_id}/``), or
    ``unmatched`` when none did (unknown paths, slash redirects)."""
    route = scope.get("route")
    path = getattr(route, "path", None) if scope.get("endpoint") is not None else None
    return path if isinstance(path, str) else UNMATCHED


class RequestMetricsMiddleware:
    """Counts every HTTP answer in ``aiorch_http_requests`` by :func:`route_label`, method
    (others as ``OTHER``) and status. Pure ASGI; a request that raised counts as 500."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.metrics.requests.labels(route_label(scope), method, str(status)).inc()


class _StoreCollector(Collector):
    def __init__(self, services: Services, metrics: Metrics) -> None:
        self.services, self.metrics = services, metrics

    def collect(self) -> Iterator[Any]:
        head = self.services.platform.head()
        with self.services.engine.connect() as conn:
            projected = conn.execute(select(t.tracking.c.position, t.tracking.c.updated_at)).all()
            relay = conn.execute(text("SELECT position FROM relay_tracking LIMIT 1")).scalar() if _has_relay(conn) else None
            invalid = _invalid_messages(conn)
            f = t.failures
            failed = conn.execute(
                select(f.c.name, f.c.state, func.count()).where(visible(_serving_name(conn))).group_by(f.c.name, f.c.state)
            ).all()
            jobs = conn.execute(
                select(
                    t.jobs.c.type,
                    t.jobs.c.status,
                    func.count(),
                    func.sum(func.extract("epoch", t.jobs.c.finished_at - t.jobs.c.started_at)),
                ).group_by(t.jobs.c.type, t.jobs.c.status)
            ).all()
        yield GaugeMetricFamily("aiorch_store_position", "Last global position in the event store", value=head)
        lag = GaugeMetricFamily("aiorch_projection_lag_events", "Events the read models are behind", labels=["projection"])
        for position, _updated in projected:
            lag.add_metric(["read_models"], max(head - position, 0))
        yield lag
        if relay is not None:
            yield GaugeMetricFamily(
                "aiorch_relay_lag_events", "Events not yet acknowledged by the broker", value=max(head - relay, 0)
            )
        count = GaugeMetricFamily("aiorch_jobs", "Jobs by type and status", labels=["type", "status"])
        seconds = GaugeMetricFamily(
            "aiorch_job_run_seconds_sum", "Total run time of finished jobs by type and outcome", labels=["type", "status"]
        )
        for job_type, status, n, total in jobs:
            count.add_metric([job_type, status], n)
            if status in ("completed", "failed", "cancelled"):
                seconds.add_metric([job_type, status], float(total or 0))
        yield count
        yield seconds
        parked = GaugeMetricFamily(
            "aiorch_projection_parked_events", "Events a projection or the relay parked (not applied)", labels=["projection"]
        )
        recorded = CounterMetricFamily(
            "aiorch_projection_failures",
            "Events a projection or the relay could not apply, by state",
            labels=["projection", "state"],
        )
        for name, state, n in failed:
            recorded.add_metric([name, state], n)
            if state == PARKED:
                parked.add_metric([name], n)
        yield parked
        yield recorded
        yield GaugeMetricFamily("aiorch_websocket_connections", "Open WebSocket connections", value=self.metrics.ws_connections)
        yield invalid


def _serving_name(conn: Any) -> str | None:
    generation = serving_generation(conn)
    return tracking_name(generation) if generation is not None else None


def _invalid_messages(conn: Any) -> CounterMetricFamily:
    """Kafka records the processors dead-lettered (``invalid_messages``), by topic."""
    counter = CounterMetricFamily(
        "aiorch_invalid_messages", "Kafka records processors dead-lettered as invalid", labels=["topic"]
    )
    if conn.execute(text("SELECT to_regclass('invalid_messages') IS NOT NULL")).scalar():
        for topic, n in conn.execute(text("SELECT topic, count(*) FROM invalid_messages GROUP BY topic")):
            counter.add_metric([topic], n)
    return counter


def _has_relay(conn: Any) -> bool:
    return bool(conn.execute(text("SELECT to_regclass('relay_tracking') IS NOT NULL")).scalar())


@router.get("/api/engines/", response_model=None, responses=ok(list[EngineOut]))
def engines(services: ServicesDep, user: CurrentUser) -> list[dict[str, Any]]:
    """``[{type, engine, available, missing?, languages, voices}]`` for every job type."""
    return list(services.catalog())


@router.get("/health/live", response_model=None, responses=ok(Live))
def live() -> dict[str, str]:
    """The process answers; ``service`` and ``instance`` (``AIORCH_INSTANCE``, set by
    ``aiorch up`` for its children) let a supervisor tell its own API from another server."""
    return {"status": "ok", "service": "aiorch", "instance": os.environ.get("AIORCH_INSTANCE", "")}


@router.get("/health/ready", responses={**ok(Ready), **ok(Ready, 503, "a part this process needs is down")})
def ready(services: ServicesDep) -> JSONResponse:
    """``{status: ok|degraded|down, checks}``. The API needs the database (503 when it is
    down); a broker, relay or projector problem makes it ``degraded`` but still ready, and
    so does any parked event (``checks.projection_failures``: how many the serving read
    models and the relay could not apply, see ``aiorch projections failures``), and a job
    type with pending work that no live processor serves (``checks.processors``:
    ``{live: [{id, host, types, current_job, last_heartbeat_at}], unserved: [types]}``)."""
    checks: dict[str, Any] = {}
    status = "ok"
    try:
        with services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            head = services.platform.head()
            checks["database"] = "ok"
            checks["projection_lag"] = max(head - (conn.execute(select(func.max(t.tracking.c.position))).scalar() or 0), 0)
            relay = conn.execute(text("SELECT position FROM relay_tracking LIMIT 1")).scalar() if _has_relay(conn) else 0
            checks["relay_lag"] = max(head - (relay or 0), 0)
            checks["projection_failures"] = parked_count(conn, _serving_name(conn))
    except Exception as exc:  # noqa: BLE001 - any failure means the database is down for us
        checks["database"] = f"down: {type(exc).__name__}"
        status = "down"
    broker = services.broker_check() if services.broker_check else "not configured"
    checks["broker"] = broker
    processors = checks["processors"] = services.processors_check() if services.processors_check else "unknown"
    if status == "ok" and (
        broker != "ok"
        or (isinstance(processors, dict) and bool(processors.get("unserved")))
        or checks.get("projection_lag", 0) > 1000
        or checks.get("relay_lag", 0) > 1000
        or checks.get("projection_failures", 0) > 0
    ):
        status = "degraded"
    return JSONResponse({"status": status, "checks": checks}, status_code=503 if status == "down" else 200)


@router.get("/metrics", response_class=Response, responses=METRICS)
def metrics(request: Request) -> Response:
    """Prometheus text: command outcomes and latency, store position, projection and relay
    lag, parked events, jobs by type and status with run time, WebSocket connections."""
    m: Metrics = request.app.state.metrics
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


def audit_json(row: dict[str, Any]) -> dict[str, Any]:
    """``{at, actor, command, target, outcome, status, request_id}``."""
    return {
        "at": iso(row["at"]),
        "actor": {"id": row["actor_id"], "username": row["actor_username"]},
        "command": row["command"],
        "target": row["target"],
        "outcome": row["outcome"],
        "status": row["status"],
        "request_id": row["request_id"],
    }


@router.get("/api/audit/", dependencies=[ReadPosition], response_model=None, responses=ok(Page[AuditEntry]))
def audit(
    request: Request,
    services: ServicesDep,
    user: CurrentUser,
    params: Annotated[PageParams, Depends(page_params)],
    actor: str | None = None,
    outcome: Literal["ok", "refused", "invalid", "conflict", "error"] | None = None,
    command: str | None = None,
    since: datetime | None = None,
) -> dict[str, Any]:
    """Command attempts, newest first (admins). Filters ``?actor=`` (user id or username),
    ``?outcome=``, ``?command=`` (e.g. SubmitJob), ``?since=``."""
    require_admin(user.actor, "the audit log")
    stmt = select(audit_log)
    if actor:
        stmt = stmt.where((audit_log.c.actor_id == actor) | (audit_log.c.actor_username == actor))
    if outcome:
        stmt = stmt.where(audit_log.c.outcome == outcome)
    if command:
        stmt = stmt.where(audit_log.c.command == command)
    if since:
        stmt = stmt.where(audit_log.c.at >= since)
    with services.engine.connect() as conn:
        return paginate(request, conn, stmt.order_by(audit_log.c.id.desc()), params, audit_json)


__all__ = ["Metrics", "RequestMetricsMiddleware", "route_label", "router"]


def dead_letter_json(row: dict[str, Any]) -> dict[str, Any]:
    """``{id, job, type, code, message, attempts, owner, dead_lettered_at}``."""
    return {
        "id": row["id"],
        "job": row["id"],
        "type": row["type"],
        "code": row["code"],
        "message": row["message"],
        "attempts": row["attempts"],
        "owner": row["owner_id"],
        "dead_lettered_at": iso(row["dead_lettered_at"]),
    }


@router.get("/api/dead-letters/", dependencies=[ReadPosition], response_model=None, responses=ok(Page[DeadLetter]))
def dead_letters(
    request: Request,
    services: ServicesDep,
    user: CurrentUser,
    params: Annotated[PageParams, Depends(page_params)],
    type: str | None = None,
) -> dict[str, Any]:
    """Jobs that exhausted their attempts, newest first (admins). ``?type=``."""
    require_admin(user.actor, "dead letters")
    stmt = select(t.dead_letters)
    if type:
        stmt = stmt.where(t.dead_letters.c.type == type)
    with services.engine.connect() as conn:
        return paginate(request, conn, stmt.order_by(t.dead_letters.c.dead_lettered_at.desc()), params, dead_letter_json)


@router.post("/api/dead-letters/{letter_id}/redrive/", status_code=202, responses=ok(Redriven | Lagging, 202))
async def redrive_dead_letter(letter_id: UUID, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Send a dead-lettered job back to pending as its next attempt (admins)."""
    require_admin(ctx.actor, "dead letters")
    with services.engine.connect() as conn:
        if conn.execute(select(t.dead_letters.c.id).where(t.dead_letters.c.id == str(letter_id))).first() is None:
            raise NotFound(f"no dead letter {letter_id}")
    position = await services.command(services.platform.retry_job, RetryJob(letter_id, "re-driven from the dead letters"), ctx)
    return await after_write(
        services, position, lambda: {"id": str(letter_id), "status": "pending", "position": position}, status_code=202
    )
