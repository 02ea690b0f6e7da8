"""The base of every stored event: who caused it, and why."""

from __future__ import annotations

from typing import Any, ClassVar

from eventsourcing.domain import Aggregate


class DomainEvent(Aggregate.Event):
    """An event of one of our aggregates.

    Fields every event carries (ARCHITECTURE.md, invariant 7):

    - ``actor``: ``{"id": str, "username": str | None, "role": str}``; a processor's role
      is ``"processor"`` and its id the processor id.
    - ``correlation_id``: the request id (``X-Request-ID``) or the job run that caused it.

    The schema version is eventsourcing's ``class_version`` (1 unless a class says
    otherwise); upcasters are ``upcast_vN_vN+1`` static methods on the class.
    """

    actor: dict[str, Any]
    correlation_id: str

    #: Fields never copied into envelopes (Kafka, ``/ws/events/``, history endpoints).
    redacted_fields: ClassVar[tuple[str, ...]] = ()


class CreatedEvent(Aggregate.Created, DomainEvent):
    """The first event of an aggregate."""
