"""The LISTEN waits on a real PostgreSQL (projections.follow.await_notification, which the
API's read waiter and the store waiters share): a NOTIFY wakes the wait, a quiet channel
times out, a closed connection raises, and the read waiter follows the projector's NOTIFYs."""

from __future__ import annotations

import threading

import psycopg
import pytest

from api.readwait import ReadWaiter
from infra.db import conninfo
from projections.follow import await_notification
from tests.conftest import wait_until


def test_a_notify_wakes_the_wait_and_a_quiet_channel_times_out(database_url: str) -> None:
    info = conninfo(database_url)
    with psycopg.connect(info, autocommit=True) as listener, psycopg.connect(info, autocommit=True) as sender:
        listener.execute('LISTEN "t_channel"')
        assert await_notification(listener, 0.2) is False
        sender.execute("NOTIFY \"t_channel\", '7'")
        assert await_notification(listener, 10.0) is True
        assert await_notification(listener, 0.2) is False  # consumed: nothing waits any more
        sender.execute("NOTIFY \"t_channel\", '8'")
        sender.execute("NOTIFY \"t_channel\", '9'")
        listener.execute("SELECT 1")  # a query reads them into psycopg's backlog
        assert await_notification(listener, 0.0) is True
    with pytest.raises((psycopg.OperationalError, OSError)):
        await_notification(listener, 0.2)


def test_the_read_waiter_wakes_its_waiters_on_the_projectors_notify(database_url: str) -> None:
    info = conninfo(database_url)
    position = {"now": 0}
    waiter = ReadWaiter(info, lambda: position["now"], channel="t_projected", poll_s=30.0)
    waiter.ensure_started()
    try:
        wait_until(lambda: waiter.reached(0), timeout=20, message="the read waiter never read the position")
        assert not waiter.wait_sync(5, 0.3)  # LISTENing (its first read follows the LISTEN), at 0
        reached = threading.Event()
        threading.Thread(target=lambda: waiter.wait_sync(5, 20.0) and reached.set(), daemon=True).start()
        position["now"] = 5
        with psycopg.connect(info, autocommit=True) as sender:
            sender.execute("NOTIFY \"t_projected\", '5'")
        # poll_s is 30 s: only the NOTIFY can wake the waiter within the 20 s
        assert reached.wait(20.0)
    finally:
        waiter.stop()
