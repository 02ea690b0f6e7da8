"""Commands of the webhook endpoints (API.md, *Webhooks*)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class CreateWebhook:
    """Register ``url`` for ``events`` (``["*"]`` = all)."""

    url: str
    events: list[str]
    description: str = ""
    enabled: bool = True


@dataclass(frozen=True)
class UpdateWebhook:
    """Change url, events, description or enabled."""

    webhook_id: UUID
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RotateWebhookSecret:
    """Sign with a new secret; the old one keeps signing for the overlap."""

    webhook_id: UUID


@dataclass(frozen=True)
class DisableWebhook:
    """The dispatcher's: stop deliveries that keep failing, saying why."""

    webhook_id: UUID
    reason: str


@dataclass(frozen=True)
class TestWebhook:
    """Send a ``webhook.test`` event."""

    webhook_id: UUID


@dataclass(frozen=True)
class RedeliverWebhook:
    """Deliver one delivery again, or every failed delivery since ``since`` (ISO 8601)."""

    webhook_id: UUID
    delivery_id: UUID | None = None
    since: str | None = None


@dataclass(frozen=True)
class DeleteWebhook:
    """Remove an endpoint."""

    webhook_id: UUID
