"""Leadership for followers that must run as one active instance (ARCHITECTURE.md,
invariant 12): the outbox relay, the reaper and reconciler, the webhook dispatcher.

Every instance asks PostgreSQL for a *session* advisory lock named after the role, on a
connection of its own. The one that gets it is the leader; the others are standbys that ask
again every ``poll_s`` seconds. When the leader dies — a clean stop, a crash or ``kill -9``
— PostgreSQL ends its session and releases the lock, so a standby takes over within about
``poll_s`` seconds (plus the time the server needs to notice a dead client's socket, which
is immediate for a killed process on the same network).

A leader checks that it still holds the lock (:meth:`Leadership.still_leader`) before each
unit of work: the check is a round trip on the lock's own connection, and a broken
connection means the lock is gone (a standby may already lead), so the old leader stops.
Work done between the loss and the check is what at-least-once delivery already allows;
every follower keeps its position in PostgreSQL, so a new leader resumes from the last
committed one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg

log = logging.getLogger(__name__)


class Leadership:
    """One named session advisory lock on a dedicated connection.

    Args:
        conninfo: a libpq connection string of the database the instances share
            (``infra.db.conninfo``).
        name: the role's name, e.g. ``"relay"``; instances with the same name compete.
        poll_s: seconds a standby waits between attempts.
    """

    def __init__(self, conninfo: str, name: str, *, poll_s: float = 1.0) -> None:
        self.conninfo, self.name, self.poll_s = conninfo, name, poll_s
        self._conn: psycopg.Connection[Any] | None = None
        self.leading = False

    @property
    def key(self) -> str:
        """The text whose ``hashtext`` is the advisory lock's key."""
        return f"aiorch-leader-{self.name}"

    def try_acquire(self) -> bool:
        """Take the lock if free; True when this instance now leads.

        Raises:
            psycopg.Error: the database cannot be reached.
        """
        if self.leading and self.still_leader():
            return True
        self._close()
        conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self.key,)).fetchone()
        if row and row[0]:
            self._conn, self.leading = conn, True
            log.info("leading %s", self.name)
            return True
        conn.close()
        return False

    def acquire(self, stop: threading.Event) -> bool:
        """Wait as a standby until this instance leads (True) or ``stop`` is set (False).
        Database errors are logged and retried."""
        while not stop.is_set():
            try:
                if self.try_acquire():
                    return True
            except psycopg.Error as exc:
                log.warning("leadership of %s: database unavailable (%s); retrying", self.name, exc)
            stop.wait(self.poll_s)
        return False

    def still_leader(self) -> bool:
        """Whether the lock is still held: one round trip on the lock's connection."""
        if not self.leading or self._conn is None or self._conn.closed:
            self.leading = False
            return False
        try:
            self._conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            log.warning("lost the leadership of %s (its connection broke)", self.name)
            self._close()
            return False

    def release(self) -> None:
        """Give the lock up (closing its session releases it)."""
        if self.leading:
            log.info("stepping down from %s", self.name)
        self._close()

    def _close(self) -> None:
        self.leading = False
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def lead_forever(
    leadership: Leadership,
    stop: threading.Event,
    step: Callable[[], float],
    *,
    on_error: Callable[[BaseException], float] | None = None,
) -> None:
    """Run ``step`` repeatedly while this instance leads, standing by when it does not,
    until ``stop`` is set.

    ``step`` does one unit of work and returns how many seconds to wait before the next one
    (0 to go on at once). An exception from ``step`` is logged and, with ``on_error``,
    turned into a wait in seconds (default 1 s); leadership is kept.
    """
    try:
        while not stop.is_set():
            if not leadership.acquire(stop):
                return
            while not stop.is_set() and leadership.still_leader():
                try:
                    wait = step()
                except Exception as exc:
                    log.exception("%s failed; retrying", leadership.name)
                    wait = on_error(exc) if on_error is not None else 1.0
                if wait > 0:
                    stop.wait(wait)
    finally:
        leadership.release()
