"""The claim policy and the reaper's decisions, in memory: priorities, retry backoff, the
owner's slots, lost leases (eventsourcing's POPO store; the read models answered by a
list of pending jobs)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from commands.context import SYSTEM, Actor, Context, acting_as
from commands.messages import CompleteJob, CreateProject, CreateUser, StartJob, SubmitJob
from commands.service import Platform
from processors.claims import (
    CLAIM_ORDER,
    ClaimPolicy,
    WorkMessage,
    claim_rank,
    has_free_slot,
    higher_priorities,
    is_due,
)
from processors.deps import ProcessorPolicies, ProcessorPorts
from processors.processor import Processor
from processors.reaper import Claim, Reaper, is_lost

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PROC = Context(Actor("proc-1", None, "processor"), "run-1")


@dataclass
class Pending:
    job_id: str
    priority: str
    created: int  # order of submission
    pending_for_s: float = 60.0
    type: str = "tts"


@dataclass
class FakeReadModels:
    """``WorkQueries`` over a list: what the read models would answer."""

    pending: list[Pending] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=dict)
    waited: list[int] = field(default_factory=list)

    def oldest_pending(
        self,
        types: Sequence[str],
        *,
        priorities: Collection[str] | None = None,
        pending_for_s: float = 0.0,
        exclude: Collection[str] = (),
    ) -> WorkMessage | None:
        found = sorted(
            (
                p
                for p in self.pending
                if p.type in types
                and (priorities is None or p.priority in priorities)
                and p.pending_for_s >= pending_for_s
                and p.job_id not in exclude
            ),
            key=lambda p: p.created,
        )
        return {"job_id": found[0].job_id, "type": found[0].type, "version": 1} if found else None

    def running_jobs(self, owner_id: str) -> int:
        return self.running.get(owner_id, 0)

    def wait_projected(self, position: int, timeout_s: float) -> bool:
        self.waited.append(position)
        return True

    def close(self) -> None:
        pass


class Locks:
    def __init__(self) -> None:
        self.held: list[str] = []

    @contextmanager
    def hold(self, owner_id: str) -> Iterator[None]:
        self.held.append(owner_id)
        yield


# -- priorities -------------------------------------------------------------------------------


def test_claim_order_is_high_normal_low_and_unknown_priorities_rank_last() -> None:
    assert CLAIM_ORDER == ("high", "normal", "low")
    assert sorted(["low", "bogus", "high", "normal"], key=claim_rank) == ["high", "normal", "low", "bogus"]


def test_higher_priorities_than_each() -> None:
    assert higher_priorities("low") == ["high", "normal"]
    assert higher_priorities("normal") == ["high"]
    assert higher_priorities("high") == []
    assert higher_priorities("unheard-of") == ["high"]  # counts as normal


def test_stale_work_is_the_most_urgent_then_oldest_past_the_threshold() -> None:
    reads = FakeReadModels(
        [
            Pending("old-low", "low", 1),
            Pending("normal-1", "normal", 2),
            Pending("high-fresh", "high", 3, pending_for_s=1.0),  # not stale yet
            Pending("normal-2", "normal", 4),
        ]
    )
    policy = ClaimPolicy(reads, requeue_after_s=10.0)
    assert policy.stale_work(["tts"]) == {"job_id": "normal-1", "type": "tts", "version": 1}
    assert policy.stale_work(["tts"], exclude=["normal-1"])["job_id"] == "normal-2"  # type: ignore[index]
    assert policy.stale_work(["tts"], exclude=["normal-1", "normal-2"])["job_id"] == "old-low"  # type: ignore[index]
    assert policy.stale_work(["stt"]) is None


def test_a_better_job_is_the_oldest_of_a_higher_priority_never_the_job_itself() -> None:
    reads = FakeReadModels([Pending("n", "normal", 1), Pending("h", "high", 2), Pending("l", "low", 3)])
    policy = ClaimPolicy(reads)
    assert policy.better_job(["tts"], "low", "l")["job_id"] == "n"  # type: ignore[index]
    assert policy.better_job(["tts"], "normal", "n")["job_id"] == "h"  # type: ignore[index]
    assert policy.better_job(["tts"], "high", "h") is None
    assert ClaimPolicy(FakeReadModels([Pending("h", "high", 1)])).better_job(["tts"], "high", "x") is None


# -- backoff ----------------------------------------------------------------------------------


def test_a_job_in_its_retry_backoff_is_not_due_until_not_before() -> None:
    assert is_due(None, NOW) and is_due("", NOW)
    assert not is_due((NOW + timedelta(seconds=5)).isoformat(), NOW)
    assert is_due(NOW.isoformat(), NOW)
    assert is_due((NOW - timedelta(seconds=1)).isoformat(), NOW)


# -- slots ------------------------------------------------------------------------------------


def test_free_slots_follow_max_concurrent_jobs() -> None:
    assert has_free_slot(0, 50)  # no limit
    assert has_free_slot(2, 1)
    assert not has_free_slot(2, 2)
    assert not has_free_slot(1, 3)


def test_the_slot_serialises_an_owner_and_waits_for_its_claim_to_show() -> None:
    reads, locks = FakeReadModels(running={"alice": 2, "bob": 1}), Locks()
    limits = {"alice": {"max_concurrent_jobs": 2}, "bob": {"max_concurrent_jobs": 2}, "carol": {}}
    policy = ClaimPolicy(reads, limits=lambda owner: limits[owner], locks=locks)
    with policy.slot("alice") as slot:
        assert not slot.free
    with policy.slot("bob") as slot:
        assert slot.free
        slot.claimed_at = 42
    with policy.slot("carol") as slot:
        assert slot.free  # no limit set
    assert locks.held == ["alice", "bob", "carol"]
    assert reads.waited == [42]  # only a claim is waited for


# -- the processor's deferrals ----------------------------------------------------------------


@pytest.fixture
def platform() -> Platform:
    return Platform(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def submit(platform: Platform, priority: str = "normal", name: str = "alice") -> tuple[str, uuid.UUID]:
    user_id, _ = platform.create_user(CreateUser(name, "password-123", "editor"), Context(SYSTEM, f"setup-{name}"))
    ctx = Context(Actor(str(user_id), name, "editor"), f"req-{name}")
    project_id, _ = platform.create_project(CreateProject("p"), ctx)
    job_id, _ = platform.submit_job(SubmitJob(project_id, "tts", {"text": "hello"}, priority=priority), ctx)
    return str(user_id), job_id


def processor(platform: Platform, policy: ClaimPolicy | None) -> Processor:
    ports = ProcessorPorts(platform, blobs=Any, consumer_factory=lambda: None)  # type: ignore[arg-type]
    return Processor({"tts": object()}, ports, processor_id="proc-1", policies=ProcessorPolicies(claims=policy))  # type: ignore[dict-item]


def message(platform: Platform, job_id: uuid.UUID) -> WorkMessage:
    return {"job_id": str(job_id), "type": "tts", "version": platform.get_job(job_id).version}


def test_a_job_retried_with_a_backoff_is_deferred_not_claimed(platform: Platform) -> None:
    _owner, job_id = submit(platform)
    platform.start_job(StartJob(job_id, platform.get_job(job_id).version, "proc-1"), PROC)
    job = platform.get_job(job_id)
    with acting_as(PROC):  # an hour's backoff, as the retry policy may give a late attempt
        assert job.end_attempt("engine_error", "flaky", retryable=True, max_attempts=3, backoff_s=3600.0)
    platform.save(job)
    assert platform.get_job(job_id).not_before
    proc = processor(platform, None)
    assert proc.handle(message(platform, job_id)) is None
    assert str(job_id) in proc._deferred
    assert platform.get_job(job_id).status == "pending" and platform.get_job(job_id).attempt == 2


def test_an_owner_without_a_free_slot_waits_pending(platform: Platform) -> None:
    owner, job_id = submit(platform)
    reads = FakeReadModels(running={owner: 1})
    proc = processor(platform, ClaimPolicy(reads, limits=lambda _owner: {"max_concurrent_jobs": 1}, locks=Locks()))
    assert proc.handle(message(platform, job_id)) is None
    assert str(job_id) in proc._deferred and platform.get_job(job_id).status == "pending"
    assert reads.waited == []  # nothing was claimed


def test_a_more_urgent_pending_job_is_tried_first_and_the_hint_kept(platform: Platform) -> None:
    _owner, low = submit(platform, "low")
    urgent = str(uuid.uuid4())  # unknown to the store: the better job is stale, nothing runs
    proc = processor(platform, ClaimPolicy(FakeReadModels([Pending(urgent, "high", 1)])))
    assert proc.handle(message(platform, low)) is None
    assert str(low) in proc._deferred and platform.get_job(low).status == "pending"


# -- the reaper -------------------------------------------------------------------------------


def claim(expires_in_s: float | None, started_ago_s: float = 100.0, job_id: str = "j") -> Claim:
    expires = NOW + timedelta(seconds=expires_in_s) if expires_in_s is not None else None
    return Claim(job_id, "proc-1", 1, NOW - timedelta(seconds=started_ago_s), expires)


def test_a_lease_expired_or_never_written_past_its_grace_is_lost() -> None:
    assert is_lost(claim(-1.0), NOW, 30.0)
    assert not is_lost(claim(+5.0), NOW, 30.0)
    assert is_lost(claim(None, started_ago_s=31.0), NOW, 30.0)
    assert not is_lost(claim(None, started_ago_s=5.0), NOW, 30.0)  # a fresh claim writes its lease first
    assert not is_lost(Claim("j", None, 1, None, None), NOW, 30.0)


@dataclass
class Book:
    claims: list[Claim]
    lease_s: float = 30.0
    released: list[tuple[str, str]] = field(default_factory=list)

    def suspect_claims(self, now: datetime, limit: int = 500) -> list[Claim]:
        return self.claims[:limit]

    def release(self, job_id: str, processor_id: str) -> None:
        self.released.append((job_id, processor_id))


def running(platform: Platform) -> uuid.UUID:
    _owner, job_id = submit(platform, name=f"u{uuid.uuid4().hex[:6]}")
    platform.start_job(StartJob(job_id, platform.get_job(job_id).version, "proc-1"), PROC)
    return job_id


def test_the_reaper_retries_a_lost_job_while_attempts_are_left_then_fails_it(platform: Platform) -> None:
    job_id = running(platform)  # three attempts (the default retry policy)
    book = Book([])
    for attempt in (1, 2, 3):
        book.claims = [Claim(str(job_id), "proc-1", attempt, NOW - timedelta(seconds=100), NOW - timedelta(seconds=1))]
        assert Reaper(platform, book, clock=lambda: NOW)() == 1
        job = platform.get_job(job_id)
        if attempt < 3:
            assert job.status == "pending" and job.attempt == attempt + 1
            platform.start_job(StartJob(job_id, job.version, "proc-1"), PROC)
    assert platform.get_job(job_id).status == "failed"  # the last attempt: failed for good
    assert book.released == [(str(job_id), "proc-1")] * 3


def test_the_reaper_leaves_live_leases_and_jobs_that_finished_meanwhile(platform: Platform) -> None:
    live, done = running(platform), running(platform)
    platform.complete_job(CompleteJob(done, {"files": [], "meta": {}}, "proc-1", 1), PROC)
    book = Book([claim(+10.0, job_id=str(live)), claim(-1.0, job_id=str(done))])
    assert Reaper(platform, book, clock=lambda: NOW)() == 0
    assert platform.get_job(live).status == "running" and platform.get_job(done).status == "completed"
    assert book.released == []
