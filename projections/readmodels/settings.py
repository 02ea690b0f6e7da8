"""The settings read model (``rm_settings``): global and per-user settings."""

from __future__ import annotations

from functools import singledispatch, singledispatchmethod

from sqlalchemy import Connection

from events import DomainEvent
from events.settings import SettingChanged, SettingCreated, SettingDeleted
from projections.readmodels.base import ReadModel, Row, insert_new, touch, touched


def setting_created(event: SettingCreated, position: int) -> Row:
    """The row of a new setting (``user_id`` None: a global one)."""
    return {
        "id": str(event.originator_id),
        "key": event.key,
        "value": event.value,
        "user_id": event.user_id,
        "deleted": False,
        "created_at": event.timestamp,
        "updated_at": event.timestamp,
        "position": position,
    }


@singledispatch
def setting_changes(event: DomainEvent) -> Row:
    """The setting columns ``event`` sets. Raises TypeError for an event of no setting change."""
    raise TypeError(f"{type(event).__name__} changes no setting")


@setting_changes.register
def _(event: SettingChanged) -> Row:
    return {"value": event.value, "deleted": False}


@setting_changes.register
def _(event: SettingDeleted) -> Row:
    return {"deleted": True}


def setting_row(row: Row | None, event: DomainEvent, position: int) -> Row:
    """The setting row after ``event`` (pure). Raises ValueError for a change before creation."""
    if isinstance(event, SettingCreated):
        return row if row is not None else setting_created(event, position)
    if row is None:
        raise ValueError(f"{type(event).__name__} of setting {event.originator_id} before its SettingCreated")
    return touched(row, event, position, setting_changes(event))


class SettingsProjection(ReadModel):
    """``rm_settings``: one row per setting; a deleted one stays, marked ``deleted``."""

    handles = (SettingCreated, SettingChanged, SettingDeleted)

    @singledispatchmethod
    def process_event(self, event: DomainEvent, conn: Connection, position: int) -> None:
        """Other events change no setting."""

    @process_event.register
    def _(self, event: SettingCreated, conn: Connection, position: int) -> None:
        insert_new(conn, self.t.settings, setting_created(event, position))

    @process_event.register
    def _(self, event: SettingChanged | SettingDeleted, conn: Connection, position: int) -> None:
        touch(conn, self.t.settings, event, position, setting_changes(event))


__all__ = ["SettingsProjection", "setting_changes", "setting_created", "setting_row"]
