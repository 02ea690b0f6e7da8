"""``aiorch webhooks``: the endpoints, their deliveries, and redelivery of one."""

from __future__ import annotations

from typing import Annotated

import typer

from infra.cli import base
from infra.cli.base import webhooks_app


@webhooks_app.command("list")
def webhooks_list() -> None:
    """Every endpoint: id, owner, enabled (or why disabled), events, URL."""
    from sqlalchemy import select

    from projections import tables as t

    system = base.system()
    try:
        with system.engine.connect() as conn:
            rows = conn.execute(select(t.webhook_endpoints).order_by(t.webhook_endpoints.c.created_at)).mappings().all()
        for r in rows:
            state = "enabled" if r["enabled"] else f"disabled ({r['disabled_reason'] or 'by its owner'})"
            typer.echo(f"{r['id']}  owner={r['owner_id']}  {state}  events={','.join(r['events'])}  {r['url']}")
    finally:
        system.close()


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    endpoint: str, limit: Annotated[int, typer.Option(help="newest N")] = 50, status: Annotated[str | None, typer.Option()] = None
) -> None:
    """An endpoint's deliveries, newest first: id, event, position, status, attempts, last error."""
    from sqlalchemy import select

    from projections import webhooks as w

    system = base.system()
    try:
        d = w.deliveries.c
        stmt = select(w.deliveries).where(d.endpoint_id == endpoint)
        if status:
            stmt = stmt.where(d.status == status)
        with system.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(d.created_at.desc()).limit(limit)).mappings().all()
        for r in rows:
            attempts = list(r["attempts"] or [])
            last = attempts[-1] if attempts else {}
            detail = last.get("error") or (f"HTTP {last['status_code']}" if last.get("status_code") else "")
            typer.echo(
                f"{r['id']}  {r['event_type']}  position={r['position']}  {r['status']}  attempts={len(attempts)}  {detail}"
            )
    finally:
        system.close()


@webhooks_app.command("redeliver")
def webhooks_redeliver(delivery: str) -> None:
    """Deliver one delivery again (recorded in the store as the system's request)."""
    import uuid
    from uuid import UUID

    from sqlalchemy import select

    from commands.context import SYSTEM, Context
    from commands.webhook_messages import RedeliverWebhook
    from projections import webhooks as w

    system = base.system()
    try:
        with system.engine.connect() as conn:
            endpoint = conn.execute(select(w.deliveries.c.endpoint_id).where(w.deliveries.c.id == delivery)).scalar()
        if endpoint is None:
            typer.echo(f"no delivery {delivery} of an endpoint", err=True)
            raise typer.Exit(1)
        cmd = RedeliverWebhook(UUID(endpoint), delivery_id=UUID(delivery))
        position = system.platform.redeliver_webhook(cmd, Context(SYSTEM, f"cli-{uuid.uuid4()}"))
        typer.echo(f"redelivery of {delivery} requested at position {position}")
    finally:
        system.close()
