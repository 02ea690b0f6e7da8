"""The agents read model (``rm_agents``)."""

from __future__ import annotations

from functools import singledispatch, singledispatchmethod

from sqlalchemy import Connection, select

from events import DomainEvent
from events.agents import AgentActivated, AgentCreated, AgentDeactivated, AgentDeleted, AgentUpdated
from projections.readmodels.base import ReadModel, Row, insert_new, touch, touched


def agent_created(event: AgentCreated, position: int, owner_username: str | None) -> Row:
    """The row of a new agent (active); ``owner_username`` from the users read model."""
    return {
        "id": str(event.originator_id),
        "name": event.name,
        "description": event.description,
        "type": event.type,
        "status": "active",
        "configuration": event.configuration,
        "provider_id": event.provider_id,
        "owner_id": event.owner_id,
        "owner_username": owner_username,
        "created_at": event.timestamp,
        "updated_at": event.timestamp,
        "position": position,
    }


@singledispatch
def agent_changes(event: DomainEvent) -> Row:
    """The agent columns ``event`` sets. Raises TypeError for an event of no agent change."""
    raise TypeError(f"{type(event).__name__} changes no agent")


@agent_changes.register
def _(event: AgentUpdated) -> Row:
    return dict(event.changes)


@agent_changes.register
def _(event: AgentActivated) -> Row:
    return {"status": "active"}


@agent_changes.register
def _(event: AgentDeactivated) -> Row:
    return {"status": "inactive"}


def agent_row(row: Row | None, event: DomainEvent, position: int, owner_username: str | None = None) -> Row | None:
    """The agent row after ``event`` (pure): None once deleted. Raises ValueError for a
    change before creation."""
    if isinstance(event, AgentCreated):
        return row if row is not None else agent_created(event, position, owner_username)
    if isinstance(event, AgentDeleted):
        return None
    if row is None:
        raise ValueError(f"{type(event).__name__} of agent {event.originator_id} before its AgentCreated")
    return touched(row, event, position, agent_changes(event))


class AgentsProjection(ReadModel):
    """``rm_agents``: one row per agent not deleted."""

    handles = (AgentCreated, AgentUpdated, AgentActivated, AgentDeactivated, AgentDeleted)

    @singledispatchmethod
    def process_event(self, event: DomainEvent, conn: Connection, position: int) -> None:
        """Other events change no agent."""

    @process_event.register
    def _(self, event: AgentCreated, conn: Connection, position: int) -> None:
        users = self.t.users
        owner = conn.execute(select(users.c.username).where(users.c.id == event.owner_id)).scalar()
        insert_new(conn, self.t.agents, agent_created(event, position, owner))

    @process_event.register
    def _(self, event: AgentUpdated | AgentActivated | AgentDeactivated, conn: Connection, position: int) -> None:
        touch(conn, self.t.agents, event, position, agent_changes(event))

    @process_event.register
    def _(self, event: AgentDeleted, conn: Connection, position: int) -> None:
        conn.execute(self.t.agents.delete().where(self.t.agents.c.id == str(event.originator_id)))


__all__ = ["AgentsProjection", "agent_changes", "agent_created", "agent_row"]
