"""The one retry-on-conflict wrapper every handler runs in, against real version conflicts
of eventsourcing's POPO store; policies injected at construction."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from commands.base import CONFLICT_RETRIES, retry_on_conflict
from commands.context import Actor, Context, current_context
from commands.errors import ClaimLost, ConcurrentWrite, Conflict
from commands.messages import ArchiveProject, CreateProject, EndAttempt, StartJob, SubmitJob, UpdateProject
from commands.service import Platform, Policies

ALICE = Context(Actor("alice-id", "alice", "editor"), "req-alice")
PROC = Context(Actor("proc-1", None, "processor"), "run-1")
POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


def racing_platform(writes: int) -> tuple[Platform, list[int]]:
    """A platform whose ``open_job_ids`` policy (called between a project's load and save
    by archive_project) renames the project itself ``writes`` times: a concurrent write."""
    calls: list[int] = []
    holder: dict[str, Any] = {}

    def open_job_ids(project_id: str) -> list[str]:
        calls.append(1)
        if len(calls) <= writes:
            holder["platform"].update_project(UpdateProject(uuid.UUID(project_id), name=f"renamed {len(calls)}"), ALICE)
        return []

    holder["platform"] = Platform(POPO, policies=Policies(open_job_ids=open_job_ids))
    return holder["platform"], calls


def test_a_concurrent_write_is_retried_from_a_fresh_load() -> None:
    platform, calls = racing_platform(writes=2)
    project_id, _ = platform.create_project(CreateProject("p"), ALICE)
    position = platform.archive_project(ArchiveProject(project_id), ALICE)
    assert len(calls) == 3  # two lost races, then the save that won
    project = platform.repository.get(project_id)
    assert project.archived and project.name == "renamed 2" and position == platform.head()


def test_a_write_that_keeps_losing_gives_up_after_the_bound_with_a_conflict() -> None:
    platform, calls = racing_platform(writes=CONFLICT_RETRIES)
    project_id, _ = platform.create_project(CreateProject("p"), ALICE)
    with pytest.raises(ConcurrentWrite, match="changed concurrently"):
        platform.archive_project(ArchiveProject(project_id), ALICE)
    assert len(calls) == CONFLICT_RETRIES
    assert not platform.repository.get(project_id).archived


class Counting:
    """A stand-in handler owner: ``run`` raises the next of ``errors`` until none is left."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors, self.calls = errors, 0

    @retry_on_conflict
    def run(self, cmd: str, ctx: Context) -> str:
        self.calls += 1
        assert current_context() is ctx  # every attempt acts as the command's context
        if self.errors:
            raise self.errors.pop(0)
        return cmd


def test_only_concurrent_writes_are_retried_refusals_propagate_at_once() -> None:
    retried = Counting([ConcurrentWrite("lost"), ConcurrentWrite("lost")])
    assert retried.run("done", ALICE) == "done" and retried.calls == 3  # type: ignore[arg-type]
    refused = Counting([Conflict("job is already cancelled")])
    with pytest.raises(Conflict, match="already cancelled"):
        refused.run("x", ALICE)  # type: ignore[arg-type]
    assert refused.calls == 1


def test_a_stale_claim_is_lost_not_retried() -> None:
    platform = Platform(POPO)
    project_id, _ = platform.create_project(CreateProject("p"), ALICE)
    job_id, _ = platform.submit_job(SubmitJob(project_id, "tts", {"text": "hi"}), ALICE)
    version = platform.get_job(job_id).version
    platform.start_job(StartJob(job_id, version, "proc-1"), PROC)
    with pytest.raises(ClaimLost):
        platform.start_job(StartJob(job_id, version, "proc-2"), PROC)
    assert platform.get_job(job_id).processor_id == "proc-1"


@pytest.mark.parametrize(("max_attempts", "retries"), [(1, False), (3, True)])
def test_the_injected_retry_policy_decides_whether_a_failed_attempt_runs_again(max_attempts: int, retries: bool) -> None:
    platform = Platform(POPO, policies=Policies(retry_policy=lambda _type: (max_attempts, 0.0, 0.0)))
    project_id, _ = platform.create_project(CreateProject("p"), ALICE)
    job_id, _ = platform.submit_job(SubmitJob(project_id, "tts", {"text": "hi"}), ALICE)
    platform.start_job(StartJob(job_id, platform.get_job(job_id).version, "proc-1"), PROC)
    will_retry, position = platform.end_attempt(EndAttempt(job_id, "boom", "it broke", retryable=True), PROC)
    assert will_retry is retries and position == platform.head()
    assert platform.get_job(job_id).status == ("pending" if retries else "failed")


def test_the_default_webhook_secret_is_created_once() -> None:
    platform = Platform(POPO, policies=Policies(encrypt=lambda text: f"enc:{text}"))
    first, position = platform.default_webhook_secret("alice-id", ALICE)
    again, head = platform.default_webhook_secret("alice-id", ALICE)
    assert first == again and first.startswith("enc:whsec_") and head == position == platform.head()
