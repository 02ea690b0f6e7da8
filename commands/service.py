"""The application service: one method per command that loads, checks, changes and saves,
and returns the global position of its last stored event."""

from __future__ import annotations

from typing import TypeVar
from uuid import UUID

from commands.base import Position
from commands.handle_config import ConfigHandlers
from commands.handle_jobs import PRIORITIES
from commands.handle_projects import ProjectHandlers
from commands.handle_reports import ReportHandlers
from commands.handle_users import UserHandlers
from commands.policies import Policies
from commands.webhook_handlers import WebhookHandlers

A = TypeVar("A")


class Platform(UserHandlers, ProjectHandlers, ReportHandlers, ConfigHandlers, WebhookHandlers):
    """The write side: ``Platform(env, policies=Policies(...))``. Its events live in the
    PostgreSQL table ``aiorch_events`` (or any eventsourcing persistence module ``env``
    names, e.g. ``{"PERSISTENCE_MODULE": "eventsourcing.popo"}``); its
    :class:`~commands.policies.Policies` are fixed at construction."""

    name = "aiorch"  # eventsourcing names the events table after it: ``aiorch_events``

    def find(self, cls: type[A], aggregate_id: UUID | str) -> A | None:
        """The stored aggregate ``aggregate_id`` as it is now (deleted ones too) if it is a
        ``cls``; None when there is none, it is of another kind, or the id is no UUID."""
        return self._get(cls, aggregate_id)


__all__ = ["PRIORITIES", "Platform", "Policies", "Position"]
