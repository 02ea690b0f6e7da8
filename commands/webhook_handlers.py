"""Command handlers of webhook endpoints and default secrets (API.md, *Webhooks*).

Owners act on their own endpoints, admins on every one (another's endpoint is NotFound).
Any signed-in user may register endpoints: an endpoint receives the events of the jobs its
owner may see anyway. URLs pass the outbound-address guard (API.md, *Outbound addresses*).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from commands.base import Position, ServiceBase, invalid
from commands.context import Context, acting_as
from commands.errors import Conflict, NotFound
from commands.outbound import check_url
from commands.text import clean_text
from commands.webhook import DefaultWebhookSecret, WebhookEndpoint, new_secret
from commands.webhook_messages import (
    CreateWebhook,
    DeleteWebhook,
    DisableWebhook,
    RedeliverWebhook,
    RotateWebhookSecret,
    TestWebhook,
    UpdateWebhook,
)
from events.webhooks import DEFAULT_JOB_WEBHOOK_EVENTS, EVENT_TYPES

MAX_EVENTS = 20


def clean_events(events: object, loc: str = "events", *, default: tuple[str, ...] | None = None) -> list[str]:
    """A subscription list: known event types or ``"*"``, without duplicates.
    Raises InvalidCommand."""
    if events is None and default is not None:
        return list(default)
    if not isinstance(events, list) or not events or len(events) > MAX_EVENTS:
        raise invalid(loc, f'must be a list of 1–{MAX_EVENTS} event types, or ["*"]')
    out: list[str] = []
    for item in events:
        if item != "*" and item not in EVENT_TYPES:
            raise invalid(loc, f"unknown event type {item!r}; known: *, {', '.join(EVENT_TYPES)}")
        if item not in out:
            out.append(item)
    return ["*"] if "*" in out else out


def check_webhook_url(url: object, field: str, *, allow_private: bool) -> str:
    """``url`` cleaned (commands/text.py) and passed by the outbound-address guard at
    creation time (a literal address is judged now, a name at delivery). Raises
    InvalidCommand (422 naming ``field``)."""
    text = clean_text(url, field, min_length=1, max_length=2048, strip=True)
    check_url(text, field=field, allow_private=allow_private)
    return text


def check_job_webhook(url: object, events: object, *, allow_private: bool) -> tuple[str | None, list[str] | None]:
    """A job's ``webhook`` and ``webhook_events`` checked: (None, None) without a webhook;
    the events default to job.completed, job.failed, job.cancelled. Raises InvalidCommand."""
    if url is None or url == "":
        if events is not None:
            clean_events(events, "webhook_events")
        return None, None
    checked = check_webhook_url(url, "webhook", allow_private=allow_private)
    return checked, clean_events(events, "webhook_events", default=DEFAULT_JOB_WEBHOOK_EVENTS)


def _no_decryption(text: str) -> str:
    raise RuntimeError("no encryption key configured (AIORCH_ENCRYPTION_KEY)")


class WebhookHandlers(ServiceBase):
    """Endpoints (owners; admins all) and per-owner default secrets.

    Set by the composition root: ``webhook_allow_private`` (``AIORCH_WEBHOOK_ALLOW_PRIVATE``)
    and ``webhook_secret_overlap_s`` (``AIORCH_WEBHOOK_SECRET_OVERLAP_S``).
    """

    webhook_allow_private: bool = False
    webhook_secret_overlap_s: float = 24 * 3600.0

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        #: ``decrypt(token) -> text``: the inverse of ``encrypt`` (default secrets are answered)
        self.decrypt: Callable[[str], str] = _no_decryption

    def check_webhook_url(self, url: object, field: str = "url") -> str:
        """:func:`check_webhook_url` with this deployment's ``webhook_allow_private``."""
        return check_webhook_url(url, field, allow_private=self.webhook_allow_private)

    def create_webhook(self, cmd: CreateWebhook, ctx: Context) -> tuple[UUID, Position, str]:
        """Register an endpoint owned by the actor; returns (id, position, secret). The
        secret is answered only here; it is stored encrypted. Raises InvalidCommand."""
        url = self.check_webhook_url(cmd.url)
        events = clean_events(cmd.events)
        description = clean_text(cmd.description, "description", max_length=2000, multiline=True)
        if not isinstance(cmd.enabled, bool):
            raise invalid("enabled", "must be a boolean")
        secret = new_secret()
        with acting_as(ctx):
            endpoint = WebhookEndpoint(
                url=url,
                events=events,
                description=description,
                enabled=cmd.enabled,
                owner_id=ctx.actor.id,
                owner_role=ctx.actor.role,
                secret_encrypted=self.encrypt(secret),
            )
        return endpoint.id, self._save(endpoint), secret

    def _own(self, endpoint: WebhookEndpoint, ctx: Context) -> None:
        if not ctx.actor.is_admin and endpoint.owner_id != ctx.actor.id:
            raise NotFound(f"no webhook {endpoint.id}")

    def update_webhook(self, cmd: UpdateWebhook, ctx: Context) -> Position:
        """Change url, events, description or enabled. Raises NotFound, InvalidCommand."""
        changes: dict[str, Any] = {}
        for key, value in cmd.changes.items():
            if key == "url":
                changes["url"] = self.check_webhook_url(value)
            elif key == "events":
                changes["events"] = clean_events(value)
            elif key == "description":
                changes["description"] = clean_text(value, "description", max_length=2000, multiline=True)
            elif key == "enabled":
                if not isinstance(value, bool):
                    raise invalid("enabled", "must be a boolean")
                changes["enabled"] = value
            else:
                raise invalid(key, "is not a field of a webhook")

        def change(endpoint: WebhookEndpoint) -> None:
            self._own(endpoint, ctx)
            endpoint.update(changes)

        return self._change(WebhookEndpoint, cmd.webhook_id, "webhook", ctx, change)

    def rotate_webhook_secret(self, cmd: RotateWebhookSecret, ctx: Context) -> tuple[Position, str]:
        """A new secret (answered once); the old one keeps signing for the overlap."""
        secret = new_secret()
        expires = (datetime.now(UTC) + timedelta(seconds=self.webhook_secret_overlap_s)).isoformat()

        def change(endpoint: WebhookEndpoint) -> None:
            self._own(endpoint, ctx)
            endpoint.rotate(self.encrypt(secret), expires)

        return self._change(WebhookEndpoint, cmd.webhook_id, "webhook", ctx, change), secret

    def disable_webhook(self, cmd: DisableWebhook, ctx: Context) -> Position:
        """Disable an endpoint whose deliveries kept failing (the dispatcher, as the system)."""

        def change(endpoint: WebhookEndpoint) -> None:
            self._own(endpoint, ctx)
            endpoint.disable(cmd.reason[:500])

        try:
            return self._change(WebhookEndpoint, cmd.webhook_id, "webhook", ctx, change)
        except Conflict:
            return self.head()

    def test_webhook(self, cmd: TestWebhook, ctx: Context) -> Position:
        """Record a request for a ``webhook.test`` delivery."""

        def change(endpoint: WebhookEndpoint) -> None:
            self._own(endpoint, ctx)
            endpoint.request_test()

        return self._change(WebhookEndpoint, cmd.webhook_id, "webhook", ctx, change)

    def redeliver_webhook(self, cmd: RedeliverWebhook, ctx: Context) -> Position:
        """Record a request to deliver again one delivery or every failed one since ``since``."""
        since: str | None = None
        if cmd.since is not None:
            try:
                parsed = datetime.fromisoformat(str(cmd.since))
            except ValueError:
                raise invalid("since", "must be an ISO 8601 time") from None
            since = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).isoformat()

        def change(endpoint: WebhookEndpoint) -> None:
            self._own(endpoint, ctx)
            endpoint.request_redelivery(str(cmd.delivery_id) if cmd.delivery_id else None, since)

        return self._change(WebhookEndpoint, cmd.webhook_id, "webhook", ctx, change)

    def delete_webhook(self, cmd: DeleteWebhook, ctx: Context) -> Position:
        """Remove an endpoint. Raises NotFound."""

        def change(endpoint: WebhookEndpoint) -> None:
            self._own(endpoint, ctx)
            endpoint.delete()

        return self._change(WebhookEndpoint, cmd.webhook_id, "webhook", ctx, change)

    def webhook_endpoint(self, webhook_id: UUID | str) -> WebhookEndpoint:
        """The endpoint folded from the store (for the dispatcher). Raises NotFound."""
        return self._load(WebhookEndpoint, webhook_id, "webhook")

    def default_webhook_secret(self, owner_id: str, ctx: Context) -> tuple[str, Position]:
        """The encrypted default secret of ``owner_id``, created on first use; returns
        (encrypted secret, position); ``decrypt`` gives the secret."""
        secret_id = DefaultWebhookSecret.create_id(owner_id)
        found = self._get(DefaultWebhookSecret, secret_id)
        if found is not None:
            return found.secret_encrypted, self.head()
        with acting_as(ctx):
            created = DefaultWebhookSecret(owner_id=owner_id, secret_encrypted=self.encrypt(new_secret()))
        try:
            return created.secret_encrypted, self._save(created)
        except Conflict:  # created concurrently: the first one stands
            found = self._get(DefaultWebhookSecret, secret_id)
            if found is None:
                raise
            return found.secret_encrypted, self.head()
