"""Events of the Agent and Provider aggregates."""

from __future__ import annotations

from typing import Any, ClassVar

from events.base import CreatedEvent, DomainEvent


class AgentCreated(CreatedEvent):
    """A saved AI agent: a job ``type`` and a ``configuration`` of default parameters."""

    name: str
    description: str
    type: str
    configuration: dict[str, Any]
    provider_id: str | None
    owner_id: str


class AgentUpdated(DomainEvent):
    """``changes`` maps name, description, configuration or provider_id to new values."""

    changes: dict[str, Any]


class AgentActivated(DomainEvent):
    """Jobs may name the agent again."""


class AgentDeactivated(DomainEvent):
    """Jobs naming the agent are refused (409)."""


class AgentDeleted(DomainEvent):
    """The agent left every list."""


class ProviderCreated(CreatedEvent):
    """An AI provider: ``kind`` local or openai_compatible. The API key is stored only
    encrypted (``api_key_encrypted``, Fernet with ``AIORCH_ENCRYPTION_KEY``) and never
    leaves the store in envelopes."""

    name: str
    kind: str
    base_url: str | None
    api_key_encrypted: str | None
    enabled: bool

    redacted_fields: ClassVar[tuple[str, ...]] = ("api_key_encrypted",)


class ProviderUpdated(DomainEvent):
    """``changes`` maps name, base_url, enabled or api_key_encrypted to new values."""

    changes: dict[str, Any]


class ProviderDeleted(DomainEvent):
    """The provider left every list."""
