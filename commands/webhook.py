"""The webhook aggregates: an owner's endpoints, and each owner's default secret that
signs per-job webhooks (API.md, *Webhooks*)."""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

from eventsourcing.domain import event

from commands.aggregate import PlatformAggregate
from commands.errors import Conflict, NotFound
from events.webhooks import (
    DefaultWebhookSecretCreated,
    WebhookEndpointCreated,
    WebhookEndpointDeleted,
    WebhookEndpointDisabled,
    WebhookEndpointUpdated,
    WebhookRedeliveryRequested,
    WebhookSecretRotated,
    WebhookTestRequested,
)

SECRET_BYTES = 32  # API.md: 24–64 random bytes
_DEFAULT_SECRET_NAMESPACE = uuid.UUID("0b8f3c7e-5a1d-4e2b-9c6f-7d8e9f0a1b2c")


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes (Standard Webhooks)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class WebhookEndpoint(PlatformAggregate):
    """An owner's endpoint: ``url`` receives ``events`` of the jobs the owner may see."""

    WebhookEndpointCreated = WebhookEndpointCreated
    WebhookEndpointUpdated = WebhookEndpointUpdated
    WebhookEndpointDisabled = WebhookEndpointDisabled
    WebhookSecretRotated = WebhookSecretRotated
    WebhookTestRequested = WebhookTestRequested
    WebhookRedeliveryRequested = WebhookRedeliveryRequested
    WebhookEndpointDeleted = WebhookEndpointDeleted

    @event(WebhookEndpointCreated)
    def __init__(
        self,
        url: str,
        events: list[str],
        description: str,
        enabled: bool,
        owner_id: str,
        owner_role: str,
        secret_encrypted: str,
    ) -> None:
        self.url, self.events, self.description, self.enabled = url, events, description, enabled
        self.owner_id, self.owner_role, self.secret_encrypted = owner_id, owner_role, secret_encrypted
        self.previous_secret_encrypted: str | None = None
        self.previous_expires_at: str | None = None
        self.disabled_reason: str | None = None
        self.deleted = False

    def update(self, changes: dict[str, Any]) -> None:
        """Change url, events, description or enabled (only real changes are recorded)."""
        self._require_live()
        real = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if real:
            self._updated(changes=real)

    def disable(self, reason: str) -> None:
        """Stop deliveries because they kept failing. Raises Conflict if already disabled."""
        self._require_live()
        if not self.enabled:
            raise Conflict(f"webhook {self.id} is already disabled")
        self._disabled(reason=reason)

    def rotate(self, secret_encrypted: str, previous_expires_at: str) -> None:
        """Sign with a new secret; the current one also signs until ``previous_expires_at``."""
        self._require_live()
        self._rotated(
            secret_encrypted=secret_encrypted,
            previous_secret_encrypted=self.secret_encrypted,
            previous_expires_at=previous_expires_at,
        )

    def request_test(self) -> None:
        """Ask for a ``webhook.test`` delivery."""
        self._require_live()
        self._test_requested()

    def request_redelivery(self, delivery_id: str | None, since: str | None) -> None:
        """Ask to deliver one delivery, or every failed one since ``since``, again."""
        self._require_live()
        self._redelivery_requested(delivery_id=delivery_id, since=since)

    def delete(self) -> None:
        """Remove the endpoint."""
        self._require_live()
        self._deleted()

    def _require_live(self) -> None:
        if self.deleted:
            raise NotFound(f"no webhook {self.id}")

    @event(WebhookEndpointUpdated)
    def _updated(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        if changes.get("enabled") is True:
            self.disabled_reason = None

    @event(WebhookEndpointDisabled)
    def _disabled(self, reason: str) -> None:
        self.enabled, self.disabled_reason = False, reason

    @event(WebhookSecretRotated)
    def _rotated(self, secret_encrypted: str, previous_secret_encrypted: str, previous_expires_at: str) -> None:
        self.secret_encrypted = secret_encrypted
        self.previous_secret_encrypted, self.previous_expires_at = previous_secret_encrypted, previous_expires_at

    @event(WebhookTestRequested)
    def _test_requested(self) -> None:
        pass

    @event(WebhookRedeliveryRequested)
    def _redelivery_requested(self, delivery_id: str | None, since: str | None) -> None:
        pass

    @event(WebhookEndpointDeleted)
    def _deleted(self) -> None:
        self.deleted = True


class DefaultWebhookSecret(PlatformAggregate):
    """The secret that signs one owner's per-job webhooks; its id derives from the owner."""

    DefaultWebhookSecretCreated = DefaultWebhookSecretCreated

    @staticmethod
    def create_id(owner_id: str) -> uuid.UUID:
        """UUID 5 of the owner: one default secret per owner, even under concurrent creation."""
        return uuid.uuid5(_DEFAULT_SECRET_NAMESPACE, owner_id)

    @event(DefaultWebhookSecretCreated)
    def __init__(self, owner_id: str, secret_encrypted: str) -> None:
        self.owner_id, self.secret_encrypted = owner_id, secret_encrypted
