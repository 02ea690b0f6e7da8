"""The webhook endpoints read model (``rm_webhook_endpoints``): what ``/api/webhooks/``
lists. Secrets are not in it (they live, encrypted, in the store and the dispatcher's
tables)."""

from __future__ import annotations

from functools import singledispatch, singledispatchmethod

from sqlalchemy import Connection

from events import DomainEvent
from events.webhooks import (
    WebhookEndpointCreated,
    WebhookEndpointDeleted,
    WebhookEndpointDisabled,
    WebhookEndpointEvent,
    WebhookEndpointUpdated,
)
from projections.readmodels.base import ReadModel, Row, insert_new, touch, touched

#: the endpoint columns a ``WebhookEndpointUpdated`` may change
EDITABLE = ("url", "events", "description", "enabled")


def endpoint_created(event: WebhookEndpointCreated, position: int) -> Row:
    """The row of a new endpoint."""
    return {
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


@singledispatch
def endpoint_changes(event: object) -> Row:
    """The endpoint columns ``event`` sets ({} for secret rotation, test and redelivery
    requests, which change nothing listed)."""
    return {}


@endpoint_changes.register
def _(event: WebhookEndpointUpdated) -> Row:
    values = {k: v for k, v in event.changes.items() if k in EDITABLE}
    if values.get("enabled") is True:
        values["disabled_reason"] = None
    return values


@endpoint_changes.register
def _(event: WebhookEndpointDisabled) -> Row:
    return {"enabled": False, "disabled_reason": event.reason}


def endpoint_row(row: Row | None, event: DomainEvent, position: int) -> Row | None:
    """The endpoint row after ``event`` (pure): None once deleted; events that change
    nothing listed leave it as it is. Raises ValueError for a change before creation."""
    if isinstance(event, WebhookEndpointCreated):
        return row if row is not None else endpoint_created(event, position)
    if isinstance(event, WebhookEndpointDeleted):
        return None
    if row is None:
        raise ValueError(f"{type(event).__name__} of endpoint {event.originator_id} before its creation")
    if not isinstance(event, WebhookEndpointUpdated | WebhookEndpointDisabled):
        return row
    return touched(row, event, position, endpoint_changes(event))


class WebhookEndpointsProjection(ReadModel):
    """``rm_webhook_endpoints``: one row per endpoint not deleted."""

    handles = (WebhookEndpointEvent,)  # type: ignore[assignment]  # a mixin of endpoint events

    @singledispatchmethod
    def process_event(self, event: DomainEvent, conn: Connection, position: int) -> None:
        """Secret rotation, test and redelivery requests change nothing listed."""

    @process_event.register
    def _(self, event: WebhookEndpointCreated, conn: Connection, position: int) -> None:
        insert_new(conn, self.t.webhook_endpoints, endpoint_created(event, position))

    @process_event.register
    def _(self, event: WebhookEndpointUpdated | WebhookEndpointDisabled, conn: Connection, position: int) -> None:
        touch(conn, self.t.webhook_endpoints, event, position, endpoint_changes(event))

    @process_event.register
    def _(self, event: WebhookEndpointDeleted, conn: Connection, position: int) -> None:
        table = self.t.webhook_endpoints
        conn.execute(table.delete().where(table.c.id == str(event.originator_id)))


__all__ = ["WebhookEndpointsProjection", "endpoint_changes", "endpoint_created", "endpoint_row"]
