"""The webhook endpoints read model (``rm_webhook_endpoints``): what ``/api/webhooks/``
lists. Secrets are not in it (they live, encrypted, in the store and the dispatcher's
tables)."""

from __future__ import annotations

from functools import singledispatch
from typing import Any

from sqlalchemy import Connection, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from events.webhooks import (
    WebhookEndpointCreated,
    WebhookEndpointDeleted,
    WebhookEndpointDisabled,
    WebhookEndpointEvent,
    WebhookEndpointUpdated,
)

_COLUMNS = ("url", "events", "description", "enabled")


@singledispatch
def apply_endpoint_event(event: WebhookEndpointEvent, tables: Any, conn: Connection, position: int) -> None:
    """Apply one endpoint event to ``tables.webhook_endpoints`` (others: secret rotation,
    test and redelivery requests, change nothing listed)."""


def _touch(tables: Any, conn: Connection, event: Any, position: int, **values: Any) -> None:
    table = tables.webhook_endpoints
    conn.execute(
        update(table)
        .where(table.c.id == str(event.originator_id), table.c.position < position)
        .values(updated_at=event.timestamp, position=position, **values)
    )


@apply_endpoint_event.register
def _(event: WebhookEndpointCreated, tables: Any, conn: Connection, position: int) -> None:
    row = {
        "id": str(event.originator_id),
        "url": event.url,
        "events": event.events,
        "description": event.description,
        "enabled": event.enabled,
        "disabled_reason": None,
        "owner_id": event.owner_id,
        "created_at": event.timestamp,
        "updated_at": event.timestamp,
        "position": position,
    }
    conn.execute(pg_insert(tables.webhook_endpoints).values(row).on_conflict_do_nothing())


@apply_endpoint_event.register
def _(event: WebhookEndpointUpdated, tables: Any, conn: Connection, position: int) -> None:
    values = {k: v for k, v in event.changes.items() if k in _COLUMNS}
    if values.get("enabled") is True:
        values["disabled_reason"] = None
    _touch(tables, conn, event, position, **values)


@apply_endpoint_event.register
def _(event: WebhookEndpointDisabled, tables: Any, conn: Connection, position: int) -> None:
    _touch(tables, conn, event, position, enabled=False, disabled_reason=event.reason)


@apply_endpoint_event.register
def _(event: WebhookEndpointDeleted, tables: Any, conn: Connection, position: int) -> None:
    conn.execute(tables.webhook_endpoints.delete().where(tables.webhook_endpoints.c.id == str(event.originator_id)))
