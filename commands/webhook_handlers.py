"""Command handlers of webhook endpoints and default secrets (API.md, *Webhooks*).

Owners act on their own endpoints, admins on every one (another's endpoint is NotFound).
Any signed-in user may register endpoints: an endpoint receives the events of the jobs its
owner may see anyway. URLs pass the outbound-address guard (API.md, *Outbound addresses*).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from commands.base import Position, ServiceBase, retry_on_conflict
from commands.context import Actor, Context
from commands.errors import Conflict, NotFound, invalid
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
    InvalidCommand (naming ``field``)."""
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


class WebhookHandlers(ServiceBase):
    """Endpoints (owners; admins all) and per-owner default secrets. Each handler reads
    load → check → change → save; ``policies.webhook_allow_private`` and
    ``policies.webhook_secret_overlap_s`` come from the composition root."""

    def check_webhook_url(self, url: object, field: str = "url") -> str:
        """:func:`check_webhook_url` with this deployment's ``webhook_allow_private``."""
        return check_webhook_url(url, field, allow_private=self.policies.webhook_allow_private)

    @retry_on_conflict
    def create_webhook(self, cmd: CreateWebhook, ctx: Context) -> tuple[UUID, Position, str]:
        """Register an endpoint owned by the actor; returns (id, position, secret). The
        secret is answered only here; it is stored encrypted. Raises InvalidCommand."""
        url = self.check_webhook_url(cmd.url)
        events = clean_events(cmd.events)
        description = clean_text(cmd.description, "description", max_length=2000, multiline=True)
        if not isinstance(cmd.enabled, bool):
            raise invalid("enabled", "must be a boolean")
        secret = new_secret()
        endpoint = WebhookEndpoint(
            url=url,
            events=events,
            description=description,
            enabled=cmd.enabled,
            owner_id=ctx.actor.id,
            owner_role=ctx.actor.role,
            secret_encrypted=self.policies.encrypt(secret),
        )
        return endpoint.id, self._save(endpoint), secret

    def _own_endpoint(self, webhook_id: UUID, actor: Actor) -> WebhookEndpoint:
        """The endpoint, if ``actor`` owns it or is an admin. Raises NotFound."""
        endpoint = self._load(WebhookEndpoint, webhook_id, "webhook")
        if not actor.is_admin and endpoint.owner_id != actor.id:
            raise NotFound(f"no webhook {endpoint.id}")
        return endpoint

    def _webhook_changes(self, given: dict[str, Any]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        for key, value in given.items():
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
        return changes

    @retry_on_conflict
    def update_webhook(self, cmd: UpdateWebhook, ctx: Context) -> Position:
        """Change url, events, description or enabled. Raises NotFound, InvalidCommand."""
        endpoint = self._own_endpoint(cmd.webhook_id, ctx.actor)
        changes = self._webhook_changes(cmd.changes)
        endpoint.update(changes)
        return self._save(endpoint)

    @retry_on_conflict
    def rotate_webhook_secret(self, cmd: RotateWebhookSecret, ctx: Context) -> tuple[Position, str]:
        """A new secret (answered once); the old one keeps signing for the overlap."""
        endpoint = self._own_endpoint(cmd.webhook_id, ctx.actor)
        secret = new_secret()
        expires = (datetime.now(UTC) + timedelta(seconds=self.policies.webhook_secret_overlap_s)).isoformat()
        endpoint.rotate(self.policies.encrypt(secret), expires)
        return self._save(endpoint), secret

    def disable_webhook(self, cmd: DisableWebhook, ctx: Context) -> Position:
        """Disable an endpoint whose deliveries kept failing (the dispatcher, as the system);
        one already disabled, or changed on every try, is left as it is (the head)."""
        try:
            return self._disable_webhook(cmd, ctx)
        except Conflict:
            return self.head()

    @retry_on_conflict
    def _disable_webhook(self, cmd: DisableWebhook, ctx: Context) -> Position:
        endpoint = self._own_endpoint(cmd.webhook_id, ctx.actor)
        endpoint.disable(cmd.reason[:500])
        return self._save(endpoint)

    @retry_on_conflict
    def test_webhook(self, cmd: TestWebhook, ctx: Context) -> Position:
        """Record a request for a ``webhook.test`` delivery. Raises NotFound, Conflict."""
        endpoint = self._own_endpoint(cmd.webhook_id, ctx.actor)
        endpoint.request_test()
        return self._save(endpoint)

    @retry_on_conflict
    def redeliver_webhook(self, cmd: RedeliverWebhook, ctx: Context) -> Position:
        """Record a request to deliver again one delivery or every failed one since ``since``."""
        since: str | None = None
        if cmd.since is not None:
            try:
                parsed = datetime.fromisoformat(str(cmd.since))
            except ValueError:
                raise invalid("since", "must be an ISO 8601 time") from None
            since = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).isoformat()
        endpoint = self._own_endpoint(cmd.webhook_id, ctx.actor)
        endpoint.request_redelivery(str(cmd.delivery_id) if cmd.delivery_id else None, since)
        return self._save(endpoint)

    @retry_on_conflict
    def delete_webhook(self, cmd: DeleteWebhook, ctx: Context) -> Position:
        """Remove an endpoint. Raises NotFound."""
        endpoint = self._own_endpoint(cmd.webhook_id, ctx.actor)
        endpoint.delete()
        return self._save(endpoint)

    def webhook_endpoint(self, webhook_id: UUID | str) -> WebhookEndpoint:
        """The endpoint folded from the store (for the dispatcher). Raises NotFound."""
        return self._load(WebhookEndpoint, webhook_id, "webhook")

    @retry_on_conflict
    def default_webhook_secret(self, owner_id: str, ctx: Context) -> tuple[str, Position]:
        """The encrypted default secret of ``owner_id``, created on first use; returns
        (encrypted secret, position); ``decrypt`` gives the secret."""
        secret_id = DefaultWebhookSecret.create_id(owner_id)
        found = self._get(DefaultWebhookSecret, secret_id)
        if found is not None:
            return found.secret_encrypted, self.head()
        created = DefaultWebhookSecret(owner_id=owner_id, secret_encrypted=self.policies.encrypt(new_secret()))
        return created.secret_encrypted, self._save(created)  # created concurrently: the retry finds it
