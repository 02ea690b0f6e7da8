"""The application service: one method per command that loads, checks, changes and saves,
and returns the global position of its last stored event."""

from __future__ import annotations

from commands.base import Position
from commands.handle_config import ConfigHandlers
from commands.handle_jobs import PRIORITIES, JobHandlers
from commands.handle_projects import ProjectHandlers
from commands.handle_users import UserHandlers
from commands.webhook_handlers import WebhookHandlers


class Platform(UserHandlers, ProjectHandlers, JobHandlers, ConfigHandlers, WebhookHandlers):
    """The write side. Its events live in PostgreSQL table ``aiorch_events``; see
    :class:`commands.base.ServiceBase` for the hooks the composition root fills in."""

    name = "aiorch"  # eventsourcing names the events table after it: ``aiorch_events``


__all__ = ["PRIORITIES", "Platform", "Position"]
