"""Events of the Setting aggregate (one per (user, key); ``user_id`` None is global)."""

from __future__ import annotations

from typing import Any

from events.base import CreatedEvent, DomainEvent


class SettingCreated(CreatedEvent):
    """A setting ``key`` was given its first ``value`` (any JSON value)."""

    key: str
    value: Any
    user_id: str | None


class SettingChanged(DomainEvent):
    """The setting took a new ``value``."""

    value: Any


class SettingDeleted(DomainEvent):
    """The setting was removed; defaults (or the global value) apply again."""
