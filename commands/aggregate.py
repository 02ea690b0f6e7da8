"""The base of our aggregates: every event is stamped with actor and correlation id."""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate

from commands.context import current_context


def _stamp(kwargs: dict[str, Any]) -> None:
    ctx = current_context()
    kwargs.setdefault("actor", ctx.actor.as_dict())
    kwargs.setdefault("correlation_id", ctx.correlation_id)


class PlatformAggregate(Aggregate):
    """An eventsourcing aggregate whose events carry ``actor`` and ``correlation_id``.

    Public methods check invariants and raise :mod:`commands.errors`; private ``@event``
    methods only mutate (they re-run on replay).
    """

    def trigger_event(self, event_class: type[Any], **kwargs: Any) -> None:
        """Record an event stamped with the current command context."""
        _stamp(kwargs)
        super().trigger_event(event_class, **kwargs)

    @classmethod
    def _create(cls, event_class: type[Any], *, id: Any = None, **kwargs: Any) -> Any:
        _stamp(kwargs)
        return super()._create(event_class, id=id, **kwargs)
