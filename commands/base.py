"""Plumbing shared by the command handlers: the event-store application, hooks the
composition root fills in, and load / save with optimistic concurrency."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Notification

from commands.context import Context, acting_as
from commands.errors import Conflict, InvalidCommand, NotFound

Position = int
A = TypeVar("A")
CONFLICT_RETRIES = 5


def invalid(loc: str, msg: str) -> InvalidCommand:
    """A 422 error about body field ``loc``."""
    return InvalidCommand(msg, errors=[{"loc": ["body", loc], "msg": msg}])


class ServiceBase(Application):
    """The write side's event-store application (PostgreSQL table ``aiorch_events``).

    Hooks set by the composition root (defaults suit unit tests):

    - ``missing_engine(type) -> [str]``: what a job type's engine lacks ([] = can run).
    - ``effective_settings(user_id) -> {key: value}``: defaults ← global ← user.
    - ``open_job_ids(project_id) -> [str]``: the project's pending and running jobs.
    - ``encrypt(text) -> str``: encryption of provider API keys at rest.
    - ``retry_policy(type) -> (max attempts, backoff base s, backoff cap s)``.
    """

    name = "aiorch"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self.missing_engine: Callable[[str], list[str]] = lambda _type: []
        self.effective_settings: Callable[[str], dict[str, Any]] = lambda _user: {}
        self.open_job_ids: Callable[[str], list[str]] = lambda _project: []
        self.encrypt: Callable[[str], str] = _no_encryption
        #: ``refuse_parameters(type, parameters) -> reason | None``: what the engines cannot do
        self.refuse_parameters: Callable[[str, dict[str, Any]], str | None] = lambda _type, _params: None
        #: ``retry_policy(type) -> (max attempts, backoff base s, backoff cap s)``
        self.retry_policy: Callable[[str], tuple[int, float, float]] = lambda _type: (3, 2.0, 60.0)

    def _get(self, cls: type[A], aggregate_id: UUID | str) -> A | None:
        try:
            agg: Any = self.repository.get(UUID(str(aggregate_id)))
        except (AggregateNotFoundError, ValueError):
            return None
        return agg if isinstance(agg, cls) else None

    def _load(self, cls: type[A], aggregate_id: UUID | str, what: str) -> A:
        agg = self._get(cls, aggregate_id)
        if agg is None or getattr(agg, "deleted", False):
            raise NotFound(f"no {what} {aggregate_id}")
        return agg

    def _save(self, *aggregates: Any) -> Position:
        try:
            recordings = self.save(*aggregates)
        except IntegrityError as exc:
            raise Conflict("the resource was changed concurrently; reload and retry") from exc
        return recordings[-1].notification.id if recordings else self.head()

    def history(self, aggregate_id: UUID | str, *, after: int = 0, limit: int = 500) -> list[tuple[Position, Any]]:
        """The aggregate's stored events after global position ``after``, in order, as
        ``(position, domain event)`` pairs (at most ``limit``)."""
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

    def _change(self, cls: type[A], aggregate_id: UUID | str, what: str, ctx: Context, change: Callable[[A], None]) -> Position:
        """Load, change (which authorizes and checks) and save, retrying on a concurrent
        write: these commands carry no expected version, so a fresh load is the right base."""
        for attempt in range(CONFLICT_RETRIES):
            agg = self._load(cls, aggregate_id, what)
            with acting_as(ctx):
                change(agg)
            if not getattr(agg, "pending_events", None):
                return self.head()
            try:
                return self._save(agg)
            except Conflict:
                if attempt == CONFLICT_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")


def _no_encryption(text: str) -> str:
    raise RuntimeError("no encryption key configured (AIORCH_ENCRYPTION_KEY)")
