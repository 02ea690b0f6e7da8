"""The Setting aggregate: one value per (user, key); ``user_id`` None is global."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import event

from commands.aggregate import PlatformAggregate
from commands.errors import NotFound
from events.settings import SettingChanged, SettingCreated, SettingDeleted

_NAMESPACE = uuid.UUID("0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0")


def setting_id_for(user_id: str | None, key: str) -> uuid.UUID:
    """The id of setting ``key`` of ``user_id`` (None: global); unique per (user, key)."""
    return uuid.uuid5(_NAMESPACE, f"{user_id or '*'}:{key}")


class Setting(PlatformAggregate):
    """A setting value (any JSON value, validated by the service for known keys)."""

    SettingCreated = SettingCreated
    SettingChanged = SettingChanged
    SettingDeleted = SettingDeleted

    @staticmethod
    def create_id(key: str, user_id: str | None) -> uuid.UUID:
        """Deterministic id: a second create for the same (user, key) conflicts."""
        return setting_id_for(user_id, key)

    @event(SettingCreated)
    def __init__(self, key: str, value: Any, user_id: str | None) -> None:
        self.key, self.value, self.user_id, self.deleted = key, value, user_id, False

    def change(self, value: Any) -> None:
        """Set a new value (a deleted setting comes back)."""
        if self.deleted or value != self.value:
            self._changed(value=value)

    def delete(self) -> None:
        """Remove the setting. Raises NotFound if already deleted."""
        if self.deleted:
            raise NotFound(f"no setting {self.key}")
        self._deleted()

    @event(SettingChanged)
    def _changed(self, value: Any) -> None:
        self.value, self.deleted = value, False

    @event(SettingDeleted)
    def _deleted(self) -> None:
        self.deleted = True
