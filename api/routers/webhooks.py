"""``/api/webhooks/``: endpoints (owners; admins see all), secret rotation, test pings, the
delivery log and redelivery; the owner's default secret for per-job webhooks
(API.md, *Webhooks*)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from api.deps import CommandCtx, CurrentUser, ReadPosition, Services, ServicesDep, after_write
from api.pagination import PageParams, page_params, paginate
from api.schemas import (
    LAGGING,
    AcceptedWithSecret,
    Delivery,
    Lagging,
    Page,
    Redelivered,
    Secret,
    WebhookCreated,
    WebhookOut,
    ok,
)
from api.views import iso
from commands.context import Context
from commands.errors import NotFound, invalid
from commands.webhook_messages import (
    CreateWebhook,
    DeleteWebhook,
    RedeliverWebhook,
    RotateWebhookSecret,
    TestWebhook,
    UpdateWebhook,
)
from projections import tables as t
from projections import webhooks as w
from projections.queries import Viewer

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])


class WebhookIn(BaseModel):
    """An endpoint: ``url`` receives ``events`` (``["*"]`` = all) of the jobs you may see."""

    url: str = Field(examples=["https://example.com/aiorch-hook"])
    events: list[str] = Field(examples=[["job.completed", "job.failed"]])
    description: str = ""
    enabled: bool = True


class WebhookPatch(BaseModel):
    """Fields to change; ``enabled: true`` also clears ``disabled_reason``."""

    url: str | None = None
    events: list[str] | None = None
    description: str | None = None
    enabled: bool | None = None


class RedeliverIn(BaseModel):
    """Deliver again every failed delivery recorded since ``since``."""

    since: datetime


def webhook_json(row: dict[str, Any]) -> dict[str, Any]:
    """``{id, url, events, description, enabled, disabled_reason, created_at, updated_at}``."""
    return {
        "id": row["id"],
        "url": row["url"],
        "events": list(row["events"]),
        "description": row["description"],
        "enabled": row["enabled"],
        "disabled_reason": row["disabled_reason"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def visible_webhooks(user: Viewer) -> Any:
    """Admins see every endpoint; others their own."""
    stmt = select(t.webhook_endpoints)
    if user["role"] != "admin":
        stmt = stmt.where(t.webhook_endpoints.c.owner_id == user["id"])
    return stmt


def load_webhook(services: Services, user: Viewer, webhook_id: str) -> dict[str, Any]:
    """A visible endpoint's row. Raises NotFound."""
    with services.engine.connect() as conn:
        row = conn.execute(visible_webhooks(user).where(t.webhook_endpoints.c.id == webhook_id)).mappings().first()
    if row is None:
        raise NotFound(f"no webhook {webhook_id}")
    return dict(row)


@router.get("/", dependencies=[ReadPosition], response_model=None, responses=ok(Page[WebhookOut]))
def list_webhooks(
    request: Request, services: ServicesDep, user: CurrentUser, params: Annotated[PageParams, Depends(page_params)]
) -> dict[str, Any]:
    """Your endpoints (admins: all), newest first."""
    stmt = visible_webhooks(user).order_by(t.webhook_endpoints.c.created_at.desc(), t.webhook_endpoints.c.id)
    with services.engine.connect() as conn:
        return paginate(request, conn, stmt, params, webhook_json)


@router.post(
    "/",
    status_code=201,
    responses={
        **ok(WebhookCreated, 201),
        **ok(AcceptedWithSecret, 202, "accepted; the read models have not shown it yet: poll `Location`"),
    },
)
async def create_webhook(body: WebhookIn, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Register an endpoint. The answer alone carries its signing ``secret`` (``whsec_…``).
    A URL to a loopback, private, link-local or metadata address → 422."""
    cmd = CreateWebhook(body.url, body.events, body.description, body.enabled)
    webhook_id, position, secret = await services.command(services.platform.create_webhook, cmd, ctx)
    headers = {"Aiorch-Position": str(position), "Location": f"/api/webhooks/{webhook_id}/"}
    if await services.await_position(position):
        row = await asyncio.to_thread(load_webhook, services, user, str(webhook_id))
        return JSONResponse({**webhook_json(row), "secret": secret}, status_code=201, headers=headers)
    return JSONResponse({"id": str(webhook_id), "position": position, "secret": secret}, status_code=202, headers=headers)


@router.get("/default/secret/", dependencies=[ReadPosition], response_model=None, responses=ok(Secret))
async def default_secret(services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> dict[str, str]:
    """``{secret}``: your secret for per-job webhooks (created on first use)."""
    encrypted, _ = await services.command(services.platform.default_webhook_secret, user.id, ctx)
    return {"secret": services.platform.decrypt(encrypted)}


@router.get("/{webhook_id}/", dependencies=[ReadPosition], response_model=None, responses=ok(WebhookOut))
def get_webhook(webhook_id: UUID, services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    """One endpoint."""
    return webhook_json(load_webhook(services, user, str(webhook_id)))


async def _update(webhook_id: UUID, changes: dict[str, Any], services: Services, ctx: Context, user: Viewer) -> Response:
    position = await services.command(services.platform.update_webhook, UpdateWebhook(webhook_id, changes), ctx)
    return await after_write(services, position, lambda: webhook_json(load_webhook(services, user, str(webhook_id))))


@router.put("/{webhook_id}/", responses={**ok(WebhookOut), **LAGGING})
async def replace_webhook(
    webhook_id: UUID, body: WebhookIn, services: ServicesDep, ctx: CommandCtx, user: CurrentUser
) -> Response:
    """Replace url, events, description and enabled."""
    return await _update(webhook_id, body.model_dump(), services, ctx, user)


@router.patch("/{webhook_id}/", responses={**ok(WebhookOut), **LAGGING})
async def update_webhook(
    webhook_id: UUID, body: WebhookPatch, services: ServicesDep, ctx: CommandCtx, user: CurrentUser
) -> Response:
    """Change an endpoint; ``{"enabled": true}`` re-enables one the dispatcher disabled."""
    return await _update(webhook_id, body.model_dump(exclude_unset=True), services, ctx, user)


@router.delete("/{webhook_id}/", status_code=204, response_class=Response, responses=LAGGING)
async def delete_webhook(webhook_id: UUID, services: ServicesDep, ctx: CommandCtx) -> Response:
    """Remove an endpoint (204); nothing more is delivered to it."""
    position = await services.command(services.platform.delete_webhook, DeleteWebhook(webhook_id), ctx)
    return await after_write(services, position)


@router.post("/{webhook_id}/rotate-secret/", responses=ok(Secret))
async def rotate_secret(webhook_id: UUID, services: ServicesDep, ctx: CommandCtx) -> Response:
    """``{secret}``: a new signing secret; the old one also signs for
    ``AIORCH_WEBHOOK_SECRET_OVERLAP_S`` (default 24 h)."""
    position, secret = await services.command(services.platform.rotate_webhook_secret, RotateWebhookSecret(webhook_id), ctx)
    return JSONResponse({"secret": secret}, headers={"Aiorch-Position": str(position)})


@router.post("/{webhook_id}/test/", status_code=202, responses=ok(Lagging, 202))
async def test_webhook(webhook_id: UUID, services: ServicesDep, ctx: CommandCtx) -> Response:
    """Send a ``webhook.test`` event (202 ``{position}``; see the delivery log)."""
    position = await services.command(services.platform.test_webhook, TestWebhook(webhook_id), ctx)
    return JSONResponse({"position": position}, status_code=202, headers={"Aiorch-Position": str(position)})


@router.get("/{webhook_id}/deliveries/", dependencies=[ReadPosition], response_model=None, responses=ok(Page[Delivery]))
def list_deliveries(
    request: Request,
    webhook_id: UUID,
    services: ServicesDep,
    user: CurrentUser,
    params: Annotated[PageParams, Depends(page_params)],
    status: Literal["pending", "succeeded", "failed"] | None = None,
) -> dict[str, Any]:
    """The endpoint's deliveries, newest first, with every attempt (``?status=``)."""
    load_webhook(services, user, str(webhook_id))
    d = w.deliveries.c
    stmt = select(w.deliveries).where(d.endpoint_id == str(webhook_id))
    if status:
        stmt = stmt.where(d.status == status)
    with services.engine.connect() as conn:
        return paginate(request, conn, stmt.order_by(d.created_at.desc(), d.position.desc()), params, w.delivery_json)


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver/", status_code=202, responses=ok(Lagging, 202))
async def redeliver_one(
    webhook_id: UUID, delivery_id: UUID, services: ServicesDep, ctx: CommandCtx, user: CurrentUser
) -> Response:
    """Deliver one delivery again (same ``webhook-id``, a fresh round of attempts)."""
    load_webhook(services, user, str(webhook_id))
    with services.engine.connect() as conn:
        found = conn.execute(
            select(w.deliveries.c.id).where(w.deliveries.c.id == str(delivery_id), w.deliveries.c.endpoint_id == str(webhook_id))
        ).first()
    if found is None:
        raise NotFound(f"no delivery {delivery_id}")
    cmd = RedeliverWebhook(webhook_id, delivery_id=delivery_id)
    position = await services.command(services.platform.redeliver_webhook, cmd, ctx)
    return JSONResponse({"position": position}, status_code=202, headers={"Aiorch-Position": str(position)})


@router.post("/{webhook_id}/redeliver/", status_code=202, responses=ok(Redelivered, 202))
async def redeliver_failed(
    webhook_id: UUID, body: RedeliverIn, services: ServicesDep, ctx: CommandCtx, user: CurrentUser
) -> Response:
    """``{count}``: deliver again every failed delivery recorded since ``since``."""
    load_webhook(services, user, str(webhook_id))
    since = body.since if body.since.tzinfo else body.since.replace(tzinfo=UTC)
    if since > datetime.now(UTC):
        raise invalid("since", "must not be in the future", "since is in the future")
    d = w.deliveries.c
    with services.engine.connect() as conn:
        count = conn.execute(
            select(func.count()).where(d.endpoint_id == str(webhook_id), d.status == "failed", d.created_at >= since)
        ).scalar_one()
    cmd = RedeliverWebhook(webhook_id, since=since.isoformat())
    position = await services.command(services.platform.redeliver_webhook, cmd, ctx)
    return JSONResponse({"count": count, "position": position}, status_code=202, headers={"Aiorch-Position": str(position)})


class WebhookCollector:
    """Prometheus metrics of webhook deliveries, read from the dispatcher's tables (the
    dispatcher runs in its own process): deliveries by status, attempts by outcome, the
    backlog (pending and due) and event → first success latency over the last hour."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Any]:
        """Yield the metric families (nothing when the tables are unreachable)."""
        d = w.deliveries.c
        try:
            with self.services.engine.connect() as conn:
                by_status = conn.execute(select(d.status, func.count()).group_by(d.status)).all()
                outcomes = conn.execute(select(w.attempt_outcomes.c.outcome, w.attempt_outcomes.c.count)).all()
                due = conn.execute(
                    select(func.count()).where(d.status == "pending", d.next_attempt_at <= func.now())
                ).scalar_one()
                latency = conn.execute(
                    select(
                        func.percentile_cont(0.5).within_group(func.extract("epoch", d.succeeded_at - d.event_at)),
                        func.percentile_cont(0.99).within_group(func.extract("epoch", d.succeeded_at - d.event_at)),
                    ).where(d.succeeded_at > func.now() - func.make_interval(0, 0, 0, 0, 1))
                ).first()
        except SQLAlchemyError:
            return
        deliveries = GaugeMetricFamily("aiorch_webhook_deliveries", "Webhook deliveries by status", labels=["status"])
        for status, n in by_status:
            deliveries.add_metric([status], n)
        yield deliveries
        attempts = CounterMetricFamily("aiorch_webhook_attempts", "Webhook delivery attempts by outcome", labels=["outcome"])
        for outcome, n in outcomes:
            attempts.add_metric([outcome], n)
        yield attempts
        yield GaugeMetricFamily("aiorch_webhook_backlog", "Pending webhook deliveries that are due", value=due)
        lat = GaugeMetricFamily(
            "aiorch_webhook_latency_seconds", "Event to successful delivery, last hour, by quantile", labels=["quantile"]
        )
        if latency is not None and latency[0] is not None:
            lat.add_metric(["0.5"], float(latency[0]))
            lat.add_metric(["0.99"], float(latency[1]))
        yield lat
