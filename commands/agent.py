"""The Agent and Provider aggregates: saved AI agent configurations and AI providers."""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import event

from commands.aggregate import PlatformAggregate
from commands.errors import Conflict, NotFound
from events.agents import (
    AgentActivated,
    AgentCreated,
    AgentDeactivated,
    AgentDeleted,
    AgentUpdated,
    ProviderCreated,
    ProviderDeleted,
    ProviderUpdated,
)


class Agent(PlatformAggregate):
    """A saved configuration for jobs of one ``type``; ``status`` active or inactive."""

    AgentCreated = AgentCreated
    AgentUpdated = AgentUpdated
    AgentActivated = AgentActivated
    AgentDeactivated = AgentDeactivated
    AgentDeleted = AgentDeleted

    @event(AgentCreated)
    def __init__(
        self,
        name: str,
        description: str,
        type: str,
        configuration: dict[str, Any],
        provider_id: str | None,
        owner_id: str,
    ) -> None:
        self.name, self.description, self.type = name, description, type
        self.configuration, self.provider_id, self.owner_id = configuration, provider_id, owner_id
        self.status, self.deleted = "active", False

    def update(self, changes: dict[str, Any]) -> None:
        """Change name, description, configuration or provider_id."""
        self._require_live()
        real = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if real:
            self._updated(changes=real)

    def activate(self) -> None:
        """Let jobs name the agent. Raises Conflict if already active."""
        self._require_live()
        if self.status == "active":
            raise Conflict(f"agent {self.id} is already active")
        self._activated()

    def deactivate(self) -> None:
        """Refuse jobs naming the agent. Raises Conflict if already inactive."""
        self._require_live()
        if self.status == "inactive":
            raise Conflict(f"agent {self.id} is already inactive")
        self._deactivated()

    def delete(self) -> None:
        """Remove the agent from lists."""
        self._require_live()
        self._deleted()

    def _require_live(self) -> None:
        if self.deleted:
            raise NotFound(f"no agent {self.id}")

    @event(AgentUpdated)
    def _updated(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            setattr(self, key, value)

    @event(AgentActivated)
    def _activated(self) -> None:
        self.status = "active"

    @event(AgentDeactivated)
    def _deactivated(self) -> None:
        self.status = "inactive"

    @event(AgentDeleted)
    def _deleted(self) -> None:
        self.deleted = True


class Provider(PlatformAggregate):
    """An AI provider; the API key is kept only encrypted."""

    ProviderCreated = ProviderCreated
    ProviderUpdated = ProviderUpdated
    ProviderDeleted = ProviderDeleted

    @event(ProviderCreated)
    def __init__(self, name: str, kind: str, base_url: str | None, api_key_encrypted: str | None, enabled: bool) -> None:
        self.name, self.kind, self.base_url = name, kind, base_url
        self.api_key_encrypted, self.enabled, self.deleted = api_key_encrypted, enabled, False

    def update(self, changes: dict[str, Any]) -> None:
        """Change name, base_url, enabled or api_key_encrypted."""
        if self.deleted:
            raise NotFound(f"no provider {self.id}")
        real = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if real:
            self._updated(changes=real)

    def delete(self) -> None:
        """Remove the provider."""
        if self.deleted:
            raise NotFound(f"no provider {self.id}")
        self._deleted()

    @event(ProviderUpdated)
    def _updated(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            setattr(self, key, value)

    @event(ProviderDeleted)
    def _deleted(self) -> None:
        self.deleted = True
