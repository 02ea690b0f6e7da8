"""Plumbing shared by the command handlers: the event-store application with its
:class:`~commands.policies.Policies`, load and save with optimistic concurrency, and the one
retry-on-conflict wrapper every handler runs in."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Notification

from commands.context import Context, acting_as
from commands.errors import ConcurrentWrite, NotFound
from commands.policies import Policies

Position = int
A = TypeVar("A")
S = TypeVar("S", bound="ServiceBase")
C = TypeVar("C")
R = TypeVar("R")
P = ParamSpec("P")
#: Attempts of one command when another one keeps writing the same aggregate first.
CONFLICT_RETRIES = 5


def retry_on_conflict(handler: Callable[Concatenate[S, C, Context, P], R]) -> Callable[Concatenate[S, C, Context, P], R]:
    """Run the handler ``(self, cmd, ctx, ...)`` inside :func:`~commands.context.acting_as`
    ``ctx``, from its load again when its save raises :class:`ConcurrentWrite` (at most
    :data:`CONFLICT_RETRIES` times; then the last ConcurrentWrite propagates).
    Commands carry no expected version, so a fresh load is the right base; a handler whose
    command does (a claim) turns ConcurrentWrite into its own refusal instead."""

    @functools.wraps(handler)
    def run(self: S, cmd: C, ctx: Context, /, *args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                with acting_as(ctx):
                    return handler(self, cmd, ctx, *args, **kwargs)
            except ConcurrentWrite:
                if attempt == CONFLICT_RETRIES:
                    raise
        raise AssertionError("unreachable")

    return run


class ServiceBase(Application[UUID]):
    """The write side's event-store application (PostgreSQL table ``aiorch_events``; any
    eventsourcing persistence module, e.g. ``{"PERSISTENCE_MODULE": "eventsourcing.popo"}``
    in unit tests). ``policies`` are fixed at construction."""

    name = "aiorch"

    def __init__(self, env: dict[str, str] | None = None, *, policies: Policies | None = None) -> None:
        super().__init__(env)
        self.policies = policies or Policies()

    def effective_settings(self, user_id: str | None) -> dict[str, Any]:
        """``{key: value}`` of ``user_id``'s settings: defaults ← global ← user (the policy)."""
        return self.policies.effective_settings(user_id)

    def decrypt(self, token: str) -> str:
        """The text ``policies.encrypt`` turned into ``token``."""
        return self.policies.decrypt(token)

    def _get(self, cls: type[A], aggregate_id: UUID | str) -> A | None:
        """The aggregate of ``cls`` with that id, deleted or not (None if absent)."""
        try:
            agg: Any = self.repository.get(UUID(str(aggregate_id)))
        except (AggregateNotFoundError, ValueError):
            return None
        return agg if isinstance(agg, cls) else None

    def _load(self, cls: type[A], aggregate_id: UUID | str, what: str) -> A:
        """The live aggregate of ``cls``. Raises NotFound (absent or deleted)."""
        agg = self._get(cls, aggregate_id)
        if agg is None or getattr(agg, "deleted", False):
            raise NotFound(f"no {what} {aggregate_id}")
        return agg

    def _save(self, *aggregates: Any) -> Position:
        """Store the aggregates' new events in one transaction; the position of the last
        one (the head when there were none). Raises ConcurrentWrite."""
        try:
            recordings = self.save(*aggregates)
        except IntegrityError as exc:
            raise ConcurrentWrite("the resource was changed concurrently; reload and retry") from exc
        return recordings[-1].notification.id if recordings else self.head()

    def history(self, aggregate_id: UUID | str, *, after: int = 0, limit: int = 500) -> list[tuple[Position, Any]]:
        """The aggregate's stored events after global position ``after``, in order, as
        ``(position, domain event)`` pairs (at most ``limit``; PostgreSQL store only)."""
        recorder: Any = self.recorder
        sql = (
            f'SELECT notification_id, originator_id, originator_version, topic, state FROM "{recorder.events_table_name}" '
            "WHERE originator_id = %s AND notification_id > %s ORDER BY originator_version LIMIT %s"
        )
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(sql, (UUID(str(aggregate_id)), after, limit))
            rows = curs.fetchall()
        return [
            (
                row["notification_id"],
                self.mapper.to_domain_event(
                    Notification(
                        id=row["notification_id"],
                        originator_id=row["originator_id"],
                        originator_version=row["originator_version"],
                        topic=row["topic"],
                        state=bytes(row["state"]),
                    )
                ),
            )
            for row in rows
        ]

    def head(self) -> Position:
        """The store's last position (0 when empty)."""
        return self.recorder.max_notification_id() or 0
