"""Events of the webhook aggregates: endpoints (owner-scoped) and each owner's default
secret for per-job webhooks; and the map from stored events to webhook event types
(API.md, *Webhooks*).

Signing secrets are stored only encrypted (``*_secret_encrypted``, Fernet with
``AIORCH_ENCRYPTION_KEY``, as provider API keys) and never leave the store in envelopes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from events.base import CreatedEvent, DomainEvent

#: Stored event class name → webhook event type (API.md, *Webhooks*).
WEBHOOK_EVENT_TYPES: dict[str, str] = {
    "JobSubmitted": "job.created",
    "JobStarted": "job.started",
    "JobProgressed": "job.progress",
    "JobLogsAppended": "job.logs",
    "JobRetried": "job.retried",
    "JobCompleted": "job.completed",
    "JobFailed": "job.failed",
    "JobCancelled": "job.cancelled",
}
TEST_EVENT_TYPE = "webhook.test"
#: Every type an endpoint may subscribe to (``"*"`` means all of them).
EVENT_TYPES: tuple[str, ...] = (*WEBHOOK_EVENT_TYPES.values(), TEST_EVENT_TYPE)
#: What a per-job webhook receives unless ``webhook_events`` says otherwise.
DEFAULT_JOB_WEBHOOK_EVENTS: tuple[str, ...] = ("job.completed", "job.failed", "job.cancelled")


def webhook_event_type(event: object) -> str | None:
    """The webhook event type of a stored event (None: no webhook is sent for it)."""
    return WEBHOOK_EVENT_TYPES.get(type(event).__name__)


def subscribed(events: list[str] | tuple[str, ...], event_type: str) -> bool:
    """Whether a subscription list (``["*"]`` = all) covers ``event_type``."""
    return "*" in events or event_type in events


class WebhookEndpointEvent:
    """Marker of the events the endpoints read model follows."""


class WebhookEndpointCreated(WebhookEndpointEvent, CreatedEvent):
    """An endpoint of ``owner_id`` (whose role was ``owner_role``) receives ``events`` at
    ``url``; the signing secret is stored encrypted."""

    url: str
    events: list[str]
    description: str
    enabled: bool
    owner_id: str
    owner_role: str
    secret_encrypted: str

    redacted_fields: ClassVar[tuple[str, ...]] = ("secret_encrypted",)


class WebhookEndpointUpdated(WebhookEndpointEvent, DomainEvent):
    """``changes`` maps url, events, description or enabled to new values (enabling
    clears ``disabled_reason``)."""

    changes: dict[str, Any]


class WebhookEndpointDisabled(WebhookEndpointEvent, DomainEvent):
    """The dispatcher disabled the endpoint (its deliveries kept failing); ``reason`` says why."""

    reason: str


class WebhookSecretRotated(WebhookEndpointEvent, DomainEvent):
    """A new signing secret; the previous one also signs until ``previous_expires_at``
    (ISO 8601 UTC)."""

    secret_encrypted: str
    previous_secret_encrypted: str
    previous_expires_at: str

    redacted_fields: ClassVar[tuple[str, ...]] = ("secret_encrypted", "previous_secret_encrypted")


class WebhookTestRequested(WebhookEndpointEvent, DomainEvent):
    """The owner asked for a ``webhook.test`` delivery."""


class WebhookRedeliveryRequested(WebhookEndpointEvent, DomainEvent):
    """Deliver again one delivery (``delivery_id``) or every failed one recorded since
    ``since`` (ISO 8601 UTC)."""

    delivery_id: str | None
    since: str | None


class WebhookEndpointDeleted(WebhookEndpointEvent, DomainEvent):
    """The endpoint left every list; nothing more is delivered to it."""


class DefaultWebhookSecretCreated(CreatedEvent):
    """The secret that signs ``owner_id``'s per-job webhooks (stored encrypted)."""

    owner_id: str
    secret_encrypted: str

    redacted_fields: ClassVar[tuple[str, ...]] = ("secret_encrypted",)
