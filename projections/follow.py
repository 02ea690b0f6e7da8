"""Following the event store's notification log: read after a position, or wait for news.

The store NOTIFYs channel ``<events table>`` on every append (eventsourcing's postgres
recorder); followers LISTEN on it, with a poll interval as a safety net.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Sequence
from typing import Any, Protocol

import psycopg
from psycopg import pq

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


def _drain(conn: psycopg.Connection[Any]) -> bool:
    """Consume every notification libpq has parsed; whether there was one."""
    seen = False
    backlog = getattr(conn, "_notifies_backlog", None)  # psycopg keeps those read during a query
    if backlog:
        backlog.clear()
        seen = True
    while conn.pgconn.notifies() is not None:
        seen = True
    return seen


def await_notification(conn: psycopg.Connection[Any], timeout: float) -> bool:
    """Block in one ``select()`` on a LISTEN connection's socket until a notification
    arrives or ``timeout`` seconds pass; whether one came (every one waiting is consumed).
    psycopg's ``notifies(timeout=...)`` would wake every 0.1 s instead.

    Raises psycopg.OperationalError when the connection is closed, OSError on a bad socket.
    """
    if _drain(conn):  # arrived while LISTEN, a query or an earlier wait read the socket
        return True
    readable, _, _ = select.select([conn.fileno()], [], [], max(timeout, 0.0))
    if not readable:
        return False
    conn.pgconn.consume_input()
    if conn.pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the LISTEN connection is closed")
    return _drain(conn)


class StoreWaiter:
    """Blocks until the store signals an append, or ``timeout`` seconds pass.

    The wait is one ``select()`` on the LISTEN connection's socket: an idle waiter wakes
    once per ``timeout`` (psycopg's own ``notifies()`` wakes every 0.1 s to check for
    signals, ten wake-ups a second per waiter).

    Args:
        conninfo: a psycopg connection string of the event store's database.
        channel: the NOTIFY channel (the events table name, e.g. ``aiorch_events``).
    """

    def __init__(self, conninfo: str, channel: str) -> None:
        self._conninfo, self._channel = conninfo, channel
        self._conn: psycopg.Connection[Any] | None = None

    def wait(self, timeout: float) -> None:
        """Return on the next NOTIFY or after ``timeout`` s; on a database error, sleep
        ``timeout`` s and reconnect on the next call."""
        self.notified(timeout)

    def notified(self, timeout: float) -> bool:
        """:meth:`wait`, answering whether a NOTIFY came (False on a timeout or an error)."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
                self._conn.execute(f'LISTEN "{self._channel}"')
            return await_notification(self._conn, timeout)
        except (psycopg.Error, OSError) as exc:
            log.warning("store waiter lost its connection (%s); will reconnect", exc)
            self.close()
            time.sleep(timeout)
            return False

    def close(self) -> None:
        """Close the LISTEN connection."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
