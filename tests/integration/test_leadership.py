"""The leadership helper on a real PostgreSQL: one leader per name, standbys take over when
it steps down or its process is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from infra.db import conninfo
from infra.leadership import Leadership, lead_forever
from tests.conftest import REPO, wait_until


def test_one_leader_per_name_and_takeover_on_release(database_url: str) -> None:
    info = conninfo(database_url)
    first, second, other = Leadership(info, "relay"), Leadership(info, "relay"), Leadership(info, "dispatcher")
    assert first.try_acquire()
    assert not second.try_acquire()
    assert other.try_acquire(), "another name is another lock"
    assert first.still_leader()
    first.release()
    assert not first.still_leader()
    assert second.try_acquire()
    assert not first.try_acquire()
    second.release()
    other.release()


def test_standby_takes_over_from_a_killed_leader(database_url: str) -> None:
    info = conninfo(database_url)
    code = (
        "import sys, time\n"
        "from infra.leadership import Leadership\n"
        "lead = Leadership(sys.argv[1], 'relay')\n"
        "assert lead.try_acquire()\n"
        "print('leading', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, info], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "leading"
        standby = Leadership(info, "relay", poll_s=0.1)
        assert not standby.try_acquire()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop = threading.Event()
        steps: list[int] = []

        def step() -> float:
            steps.append(1)
            if len(steps) >= 3:
                stop.set()
            return 0.0

        runner = threading.Thread(target=lead_forever, args=(standby, stop, step), daemon=True)
        runner.start()
        wait_until(lambda: len(steps) >= 3, 30, message="the standby to lead and work")
        runner.join(10)
        assert not runner.is_alive()
        assert not standby.leading, "lead_forever steps down when it stops"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_leader_whose_connection_breaks_stops_leading(database_url: str) -> None:
    info = conninfo(database_url)
    leader, standby = Leadership(info, "reaper"), Leadership(info, "reaper")
    assert leader.try_acquire()
    import psycopg

    with psycopg.connect(info, autocommit=True) as admin:
        pids = [
            r[0]
            for r in admin.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall()
        ]
        assert len(pids) == 1
        admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
    wait_until(standby.try_acquire, 30, message="the lock to be free after the leader's session ended")
    assert not leader.still_leader()
    standby.release()
