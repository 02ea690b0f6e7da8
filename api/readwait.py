"""Read-your-writes waits that hold no thread.

The projector NOTIFYs channel :data:`CHANNEL` (payload: its position) in each batch's
transaction, so the notification arrives once the batch is committed. One listener thread
per API process LISTENs on it (one psycopg connection), re-reads the serving generation's
position after each notification (or every ``poll_s`` seconds as a safety net, e.g. while
its connection is down) and wakes the waiters the read models have now reached: asyncio
futures for request handlers, a condition for threads (the live hub).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg

from api.errors import ServiceUnavailable
from projections.follow import await_notification

log = logging.getLogger(__name__)

T = TypeVar("T")

#: the channel projections/projector.py ``run_once`` NOTIFYs after each committed batch
CHANNEL = "aiorch_projected"


class ReadWaiter:
    """Wakes waiters once the read models reach a position.

    Args:
        conninfo: psycopg connection string of the read models' database (where the
            projector NOTIFYs).
        projected: reads the serving generation's position from the database (blocking).
        poll_s: safety-net interval (seconds) for re-reading the position without a
            notification (a lost connection, a rebuild switching generations).
    """

    def __init__(
        self,
        conninfo: str,
        projected: Callable[[], int],
        *,
        channel: str = CHANNEL,
        poll_s: float = 1.0,
    ) -> None:
        self._conninfo, self._projected, self._channel = conninfo, projected, channel
        self.poll_s = poll_s
        self.position = 0  # the last position read from the database
        self._known = False  # whether ``position`` was read at least once
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[bool]]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._failures = 0  # connection failures in a row

    # -- waiting ------------------------------------------------------------------------

    def reached(self, position: int) -> bool:
        """Whether the read models are known to include ``position`` (no database access)."""
        return self._known and self.position >= position

    async def wait(self, position: int, timeout: float) -> bool:
        """Wait (≤ ``timeout`` s, holding no thread) until the read models include
        ``position``; True if they do."""
        if self.reached(position):
            return True
        self.ensure_started()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        entry = (position, loop, future)
        with self._lock:
            if self.reached(position):
                return True
            self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return self.reached(position)
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    async def unless_database_lost(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` and return its result, unless the listener loses the
        database first.

        Raises:
            ServiceUnavailable: (503) the listener's connection broke before ``awaitable``
                finished; ``awaitable`` goes on in the background (its outcome is logged).
        """
        self.ensure_started()
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[bool] = loop.create_future()
        entry = (sys.maxsize, loop, lost)  # no position reaches it: only a loss ends it
        task: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        with self._lock:
            self._waiters.append(entry)
        try:
            either: set[asyncio.Future[Any]] = {task, lost}
            done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            task.add_done_callback(_late)
            lost.result()  # raises ServiceUnavailable
            raise ServiceUnavailable("the database is unavailable; retry shortly", retry_after=2)
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove(entry)
            if not lost.done():
                lost.cancel()

    def wait_sync(self, position: int, timeout: float) -> bool:
        """Block the calling thread (≤ ``timeout`` s) until the read models include
        ``position``; True if they do. For callers outside an event loop."""
        if self.reached(position):
            return True
        self.ensure_started()
        with self._changed:
            self._changed.wait_for(lambda: self.reached(position) or self._stop.is_set(), timeout)
            return self.reached(position)

    # -- the listener -------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start the listener thread (once)."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="read-waiter", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop listening; pending waits time out."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()

    def refresh(self) -> int:
        """Re-read the position from the database and wake whom it reached; returns it."""
        position = int(self._projected())
        woken: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[bool]]] = []
        with self._changed:
            self.position, self._known = position, True
            woken = [w for w in self._waiters if w[0] <= position]
            self._changed.notify_all()
        for _, loop, future in woken:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(_resolve, future)
        return position

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception:  # the database went away: poll (backing off) until it is back
                self._failures += 1
                level = logging.WARNING if self._failures == 1 else logging.DEBUG
                log.log(level, "read waiter lost its connection; polling", exc_info=True)
                self._close()
                self._fail_waiting()
                self._stop.wait(min(self.poll_s * self._failures, 2.0))
                with contextlib.suppress(Exception):
                    self.refresh()
        self._close()

    def _fail_waiting(self) -> None:
        """The database went away: pending waits answer 503 now instead of waiting it out."""
        with self._changed:
            failing = list(self._waiters)
        for _, loop, future in failing:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(_fail, future)

    def _listen(self) -> None:
        self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
        self._conn.execute(f'LISTEN "{self._channel}"')
        self._failures = 0
        while not self._stop.is_set():
            self.refresh()  # after LISTEN: no commit slips between the read and the wait
            await_notification(self._conn, self.poll_s)  # one select(): no 0.1 s wake-ups while idle

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _fail(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_exception(ServiceUnavailable("the database is unavailable; retry shortly", retry_after=2))


def _late(task: asyncio.Future[Any]) -> None:
    """Log how a command whose request already answered 503 ended."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is None:
        log.warning("a command answered 503 when the database went away, and then committed")
    else:
        log.info("a command answered 503 when the database went away, and then failed: %s", exc)


def _resolve(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(True)
