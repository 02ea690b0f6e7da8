"""The providers read model (``rm_providers``): whether a provider has an API key, never
the key."""

from __future__ import annotations

from functools import singledispatchmethod

from sqlalchemy import Connection

from events import DomainEvent
from events.agents import ProviderCreated, ProviderDeleted, ProviderUpdated
from projections.readmodels.base import ReadModel, Row, insert_new, touch, touched

#: the provider columns a ``ProviderUpdated`` may change as they are
EDITABLE = ("name", "base_url", "enabled")


def provider_created(event: ProviderCreated, position: int) -> Row:
    """The row of a new provider."""
    return {
        "id": str(event.originator_id),
        "name": event.name,
        "kind": event.kind,
        "base_url": event.base_url,
        "has_api_key": bool(event.api_key_encrypted),
        "enabled": event.enabled,
        "created_at": event.timestamp,
        "updated_at": event.timestamp,
        "position": position,
    }


def provider_changes(event: ProviderUpdated) -> Row:
    """The provider columns an update sets (a new API key only as ``has_api_key``)."""
    values = {k: v for k, v in event.changes.items() if k in EDITABLE}
    if "api_key_encrypted" in event.changes:
        values["has_api_key"] = bool(event.changes["api_key_encrypted"])
    return values


def provider_row(row: Row | None, event: DomainEvent, position: int) -> Row | None:
    """The provider row after ``event`` (pure): None once deleted. Raises ValueError for a
    change before creation, TypeError for an event of no provider."""
    if isinstance(event, ProviderCreated):
        return row if row is not None else provider_created(event, position)
    if isinstance(event, ProviderDeleted):
        return None
    if not isinstance(event, ProviderUpdated):
        raise TypeError(f"{type(event).__name__} changes no provider")
    if row is None:
        raise ValueError(f"ProviderUpdated of provider {event.originator_id} before its ProviderCreated")
    return touched(row, event, position, provider_changes(event))


class ProvidersProjection(ReadModel):
    """``rm_providers``: one row per provider not deleted."""

    handles = (ProviderCreated, ProviderUpdated, ProviderDeleted)

    @singledispatchmethod
    def process_event(self, event: DomainEvent, conn: Connection, position: int) -> None:
        """Other events change no provider."""

    @process_event.register
    def _(self, event: ProviderCreated, conn: Connection, position: int) -> None:
        insert_new(conn, self.t.providers, provider_created(event, position))

    @process_event.register
    def _(self, event: ProviderUpdated, conn: Connection, position: int) -> None:
        touch(conn, self.t.providers, event, position, provider_changes(event))

    @process_event.register
    def _(self, event: ProviderDeleted, conn: Connection, position: int) -> None:
        conn.execute(self.t.providers.delete().where(self.t.providers.c.id == str(event.originator_id)))


__all__ = ["ProvidersProjection", "provider_changes", "provider_created", "provider_row"]
