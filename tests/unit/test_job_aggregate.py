"""The Job aggregate's rules, in memory (eventsourcing's POPO store)."""

from __future__ import annotations

import uuid

import pytest

from commands.context import SYSTEM, Actor, Context
from commands.errors import ClaimLost, Conflict, Forbidden, InvalidCommand, NotFound
from commands.messages import (
    CancelJob,
    CompleteJob,
    ConfirmCancellation,
    CreateProject,
    CreateUser,
    StartJob,
    SubmitJob,
    UpdateProgress,
)
from commands.service import Platform
from events import to_envelope

PROC = Context(Actor("proc-1", None, "processor"), "run-1")


@pytest.fixture
def platform() -> Platform:
    return Platform(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def user(platform: Platform, name: str, role: str) -> Context:
    user_id, _ = platform.create_user(CreateUser(name, "password-123", role), Context(SYSTEM, "setup"))
    return Context(Actor(str(user_id), name, role), f"req-{name}")


def submitted(platform: Platform, text: str = "hello") -> tuple[Context, uuid.UUID]:
    alice = user(platform, "alice", "editor")
    project_id, _ = platform.create_project(CreateProject("p"), alice)
    job_id, _ = platform.submit_job(SubmitJob(project_id, "tts", {"text": text}), alice)
    return alice, job_id


def test_every_event_carries_actor_correlation_id_and_schema_version(platform: Platform) -> None:
    alice, _job_id = submitted(platform)
    notifications = platform.notification_log.select(1, 10)
    assert [n.id for n in notifications] == [1, 2, 3]
    job_event = platform.mapper.to_domain_event(notifications[-1])
    envelope = to_envelope(job_event, notifications[-1].id)
    assert envelope["type"] == "JobSubmitted"
    assert envelope["actor"] == {"id": alice.actor.id, "username": "alice", "role": "editor"}
    assert envelope["correlation_id"] == "req-alice"
    assert envelope["schema_version"] == 1
    assert envelope["data"]["parameters"] == {"text": "hello"}
    user_envelope = to_envelope(platform.mapper.to_domain_event(notifications[0]), 1)
    assert "password_hash" not in user_envelope["data"]


def test_lifecycle_positions_increase_and_progress_is_bounded(platform: Platform) -> None:
    _, job_id = submitted(platform)
    job = platform.get_job(job_id)
    p1 = platform.start_job(StartJob(job_id, job.version, "proc-1"), PROC)
    p2 = platform.update_progress(UpdateProgress(job_id, 40, "synthesizing"), PROC)
    with pytest.raises(InvalidCommand):
        platform.update_progress(UpdateProgress(job_id, 101, "x"), PROC)
    p3 = platform.complete_job(CompleteJob(job_id, {"files": [], "meta": {}}, "proc-1"), PROC)
    assert p1 < p2 < p3
    done = platform.get_job(job_id)
    assert (done.status, done.progress, done.attempt) == ("completed", 100, 1)
    with pytest.raises(Conflict):  # a second result is refused
        platform.complete_job(CompleteJob(job_id, {"files": [], "meta": {}}, "proc-1"), PROC)


def test_claim_at_a_stale_version_loses(platform: Platform) -> None:
    _, job_id = submitted(platform)
    seen = platform.get_job(job_id).version
    platform.start_job(StartJob(job_id, seen, "proc-1"), PROC)
    with pytest.raises(ClaimLost):
        platform.start_job(StartJob(job_id, seen, "proc-2"), PROC)


def test_late_result_from_another_processor_is_refused(platform: Platform) -> None:
    _, job_id = submitted(platform)
    platform.start_job(StartJob(job_id, platform.get_job(job_id).version, "proc-1"), PROC)
    with pytest.raises(Conflict):
        platform.complete_job(CompleteJob(job_id, {"files": [], "meta": {}}, "proc-2"), PROC)


def test_cancel_pending_is_immediate_running_is_requested_finished_conflicts(platform: Platform) -> None:
    alice, job_id = submitted(platform)
    assert platform.cancel_job(CancelJob(job_id), alice)[0] == "cancelled"
    with pytest.raises(Conflict):
        platform.cancel_job(CancelJob(job_id), alice)

    project_id = uuid.UUID(platform.get_job(job_id).project_id)
    running, _ = platform.submit_job(SubmitJob(project_id, "tts", {"text": "x"}), alice)
    platform.start_job(StartJob(running, platform.get_job(running).version, "proc-1"), PROC)
    assert platform.cancel_job(CancelJob(running), alice)[0] == "cancel_requested"
    assert platform.get_job(running).cancel_requested
    platform.confirm_cancellation(ConfirmCancellation(running), PROC)
    assert platform.get_job(running).status == "cancelled"

    finished, _ = platform.submit_job(SubmitJob(project_id, "tts", {"text": "y"}), alice)
    platform.start_job(StartJob(finished, platform.get_job(finished).version, "proc-1"), PROC)
    platform.complete_job(CompleteJob(finished, {"files": [], "meta": {}}), PROC)
    assert platform.cancel_job(CancelJob(finished), alice)[0] == "completed"


def test_roles(platform: Platform) -> None:
    alice, job_id = submitted(platform)
    bob = user(platform, "bob", "editor")
    viewer = user(platform, "vic", "viewer")
    with pytest.raises(NotFound):
        platform.cancel_job(CancelJob(job_id), bob)
    with pytest.raises(Forbidden):
        platform.cancel_job(CancelJob(job_id), viewer)
    with pytest.raises(Forbidden):
        platform.create_project(CreateProject("nope"), viewer)
    with pytest.raises(Forbidden):
        platform.update_progress(UpdateProgress(job_id, 1), alice)  # reports are for processors and admins
    with pytest.raises(Forbidden):
        platform.create_user(CreateUser("eve", "password-123", "admin"), alice)


def test_usernames_are_unique(platform: Platform) -> None:
    user(platform, "carol", "viewer")
    with pytest.raises(Conflict):
        user(platform, "Carol", "editor")
