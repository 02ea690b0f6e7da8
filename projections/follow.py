"""Following the event store's notification log: read after a position, or wait for news.

The store NOTIFYs channel ``<events table>`` on every append (eventsourcing's postgres
recorder); followers LISTEN on it, with a poll interval as a safety net.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import psycopg

log = logging.getLogger(__name__)


class NotificationSource(Protocol):
    """What followers need of eventsourcing's application recorder."""

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Any]: ...

    def max_notification_id(self) -> int | None: ...


class StoreWaiter:
    """Blocks until the store signals an append, or ``timeout`` seconds pass.

    Args:
        conninfo: a psycopg connection string of the event store's database.
        channel: the NOTIFY channel (the events table name, e.g. ``aiorch_events``).
    """

    def __init__(self, conninfo: str, channel: str) -> None:
        self._conninfo, self._channel = conninfo, channel
        self._conn: psycopg.Connection[Any] | None = None

    def wait(self, timeout: float) -> None:
        """Return on the next NOTIFY or after ``timeout`` s; on a database error, just sleep."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
                self._conn.execute(f'LISTEN "{self._channel}"')
            for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                pass
        except psycopg.Error as exc:
            log.warning("store waiter lost its connection (%s); will reconnect", exc)
            self.close()
            import time

            time.sleep(timeout)

    def close(self) -> None:
        """Close the LISTEN connection."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
