"""Group commit (infra/groupcommit.py) on the real PostgreSQL event store.

Behaviour only: concurrent appends share transactions, yet every command keeps its own
optimistic-concurrency check, and no reader ever sees a position appear below one it has
already seen (positions may skip numbers; they never arrive late).
"""

from __future__ import annotations

import random
import threading
from typing import Any

import psycopg
import pytest
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError

from infra.db import conninfo
from infra.groupcommit import GroupCommitRecorder
from tests.conftest import wait_until


class Counter(Aggregate):
    """A small aggregate of this test's own: its events go through the platform's store."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    @event("Incremented")
    def increment(self, by: int = 1) -> None:
        self.count += by


def recorder_of(system: Any) -> GroupCommitRecorder:
    recorder = system.platform.recorder
    assert isinstance(recorder, GroupCommitRecorder), type(recorder)
    return recorder


def test_a_version_conflict_fails_only_its_own_append_in_a_shared_transaction(system: Any) -> None:
    """Two saves at one version queued in one group: one IntegrityError, the rest commit."""
    platform, recorder = system.platform, recorder_of(system)
    counter = Counter(name="c")
    platform.save(counter)
    first, second = platform.repository.get(counter.id), platform.repository.get(counter.id)
    first.increment(by=1)
    second.increment(by=10)
    bystander = Counter(name="bystander")
    outcomes: dict[str, Any] = {}

    def save(label: str, aggregate: Aggregate) -> None:
        try:
            outcomes[label] = platform.save(aggregate)
        except IntegrityError as error:
            outcomes[label] = error

    groups_before = recorder.groups
    with recorder._queue_lock:  # stand in for a leader: the three appends must queue as one group
        recorder._leading = True
    labelled = (("first", first), ("second", second), ("bystander", bystander))
    threads = [threading.Thread(target=save, args=a) for a in labelled]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(recorder._queue) == 3, timeout=10, message="three appends queued")
    with recorder._queue_lock:  # hand the leadership to the first waiter, as a leader does
        recorder._queue[0].lead = True
        recorder._queue[0].wake.set()
    for thread in threads:
        thread.join(timeout=30)
    assert recorder.groups == groups_before + 1, "the three appends were written in one transaction"
    conflicts = [label for label in ("first", "second") if isinstance(outcomes[label], IntegrityError)]
    assert len(conflicts) == 1, outcomes
    assert not isinstance(outcomes["bystander"], IntegrityError)
    stored = platform.repository.get(counter.id)
    assert stored.version == 2
    assert stored.count == (10 if conflicts == ["first"] else 1)
    assert platform.repository.get(bystander.id).name == "bystander"


def test_sixteen_writers_never_make_a_position_visible_late(system: Any, settings: Any) -> None:
    """16 threads append (with conflicts mixed in) while a reader tails the events table."""
    platform, recorder = system.platform, recorder_of(system)
    table = recorder.events_table_name
    writers, per_writer = 16, 25
    stop = threading.Event()
    violations: list[str] = []
    seen: set[int] = set()
    committed = {"events": 0, "conflicts": 0}
    lock = threading.Lock()
    ready = threading.Event()

    def read() -> None:
        high = 0
        with psycopg.connect(conninfo(settings.database_url), autocommit=True) as conn:
            start = conn.execute(f'SELECT coalesce(max(notification_id), 0) FROM "{table}"').fetchone()
            floor = start[0] if start else 0
            ready.set()  # the writers start only now: every event they commit is above floor
            while True:
                final = stop.is_set()  # a last sweep after the writers have finished
                rows = conn.execute(f'SELECT notification_id FROM "{table}" WHERE notification_id > %s', (floor,)).fetchall()
                new = {r[0] for r in rows} - seen
                if new and min(new) < high:
                    violations.append(f"position {min(new)} appeared after {high} was visible")
                seen.update(new)
                high = max(seen, default=high)
                if final:
                    return

    def write(n: int) -> None:
        rng = random.Random(n)
        for i in range(per_writer):
            counter = Counter(name=f"w{n}-{i}")
            for _ in range(rng.randint(0, 2)):
                counter.increment()
            platform.save(counter)
            events = 1 + counter.count
            stale = platform.repository.get(counter.id)
            counter.increment()
            platform.save(counter)
            events += 1
            stale.increment()
            try:  # always a conflict: the version was just taken
                platform.save(stale)
            except IntegrityError:
                with lock:
                    committed["conflicts"] += 1
            with lock:
                committed["events"] += events

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert ready.wait(30), "the reader started"
    groups, appends = recorder.groups, recorder.appends
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    stop.set()
    reader.join(timeout=10)
    assert not violations, violations[:5]
    assert committed["conflicts"] == writers * per_writer
    assert len(seen) == committed["events"], "every committed event was seen exactly once"
    assert recorder.appends - appends == writers * per_writer * 3
    assert recorder.groups - groups < recorder.appends - appends, "concurrent appends shared transactions"


@pytest.mark.parametrize("group_commit", [True, False])
def test_store_env_picks_the_recorder(group_commit: bool) -> None:
    from infra.db import store_env

    env = store_env("postgresql://u:p@h/db", group_commit=group_commit)
    assert ("APPLICATION_RECORDER_TOPIC" in env) is group_commit
    if group_commit:
        assert env["APPLICATION_RECORDER_TOPIC"] == "infra.groupcommit:GroupCommitRecorder"
