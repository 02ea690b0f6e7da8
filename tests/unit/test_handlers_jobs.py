"""Job and project command handlers in memory (eventsourcing's POPO store): submission,
idempotency, and who may cancel, retry, edit or archive which job."""

from __future__ import annotations

import uuid

import pytest

from api.errors import problem_errors
from commands.context import Actor, Context
from commands.errors import Conflict, Forbidden, InvalidCommand, NotFound
from commands.messages import (
    ArchiveJob,
    ArchiveProject,
    CancelJob,
    CreateProject,
    RetryJob,
    StartJob,
    SubmitJob,
    UpdateJob,
    UpdateProject,
)
from commands.service import Platform, Policies

ALICE = Context(Actor("alice-id", "alice", "editor"), "req-alice")
BOB = Context(Actor("bob-id", "bob", "editor"), "req-bob")
VIEWER = Context(Actor("vera-id", "vera", "viewer"), "req-vera")
ADMIN = Context(Actor("root-id", "root", "admin"), "req-root")
PROC = Context(Actor("proc-1", None, "processor"), "run-1")


@pytest.fixture
def platform() -> Platform:
    return Platform({"PERSISTENCE_MODULE": "eventsourcing.popo"})


def submitted(platform: Platform, ctx: Context = ALICE, **kwargs: object) -> tuple[uuid.UUID, uuid.UUID]:
    project_id, _ = platform.create_project(CreateProject("p"), ctx)
    job_id, _ = platform.submit_job(SubmitJob(project_id, "tts", {"text": "hello"}, **kwargs), ctx)  # type: ignore[arg-type]
    return project_id, job_id


def test_viewers_submit_nothing_and_nobody_submits_into_anothers_project(platform: Platform) -> None:
    project_id, _ = platform.create_project(CreateProject("p"), ALICE)
    with pytest.raises(Forbidden):
        platform.submit_job(SubmitJob(project_id, "tts", {"text": "hi"}), VIEWER)
    with pytest.raises(InvalidCommand) as info:
        platform.submit_job(SubmitJob(project_id, "tts", {"text": "hi"}), BOB)
    assert problem_errors(info.value) == [{"loc": ["body", "project"], "msg": f"no project {project_id} that you own"}]


def test_a_missing_engine_policy_refuses_the_type_before_anything_is_stored() -> None:
    policies = Policies(missing_engine=lambda job_type: ["espeak-ng"] if job_type == "tts" else [])
    platform = Platform({"PERSISTENCE_MODULE": "eventsourcing.popo"}, policies=policies)
    project_id, head = platform.create_project(CreateProject("p"), ALICE)
    with pytest.raises(InvalidCommand, match="espeak-ng") as info:
        platform.submit_job(SubmitJob(project_id, "tts", {"text": "hi"}), ALICE)
    assert info.value.fields[0].path == ("type",)
    assert platform.head() == head


def test_an_idempotent_replay_answers_the_first_job_and_another_body_is_refused(platform: Platform) -> None:
    project_id, _ = platform.create_project(CreateProject("p"), ALICE)
    first = SubmitJob(project_id, "tts", {"text": "hi"}, idempotency_key="k-1", request_hash="h-1")
    job_id, position = platform.submit_job(first, ALICE)
    again, again_position = platform.submit_job(first, ALICE)
    assert again == job_id and again_position == position == platform.head()
    other = SubmitJob(project_id, "tts", {"text": "other"}, idempotency_key="k-1", request_hash="h-2")
    with pytest.raises(InvalidCommand, match="used with another request") as info:
        platform.submit_job(other, ALICE)
    assert problem_errors(info.value) == [{"loc": ["header", "Idempotency-Key"], "msg": "reused with another body"}]
    assert platform.head() == position


def test_a_file_of_the_wrong_kind_is_unsupported(platform: Platform) -> None:
    from commands.errors import UnsupportedMediaType

    project_id, _ = platform.create_project(CreateProject("p"), ALICE)
    audio = {"input_file": {"blob": "uploads/x/a.png", "name": "a.png", "size": 3, "content_type": "image/png", "sha256": "0"}}
    with pytest.raises(UnsupportedMediaType, match="input_file is image/png"):
        platform.submit_job(SubmitJob(project_id, "stt", {}, input_files=audio), ALICE)


def test_cancel_answers_what_happened_and_hides_others_jobs(platform: Platform) -> None:
    _, job_id = submitted(platform)
    with pytest.raises(NotFound):
        platform.cancel_job(CancelJob(job_id), BOB)
    with pytest.raises(Forbidden):
        platform.cancel_job(CancelJob(job_id), VIEWER)
    with pytest.raises(NotFound):
        platform.cancel_job(CancelJob(uuid.uuid4()), ADMIN)
    status, position = platform.cancel_job(CancelJob(job_id), ALICE)
    assert status == "cancelled" and position == platform.head()
    with pytest.raises(Conflict, match="already cancelled"):
        platform.cancel_job(CancelJob(job_id), ADMIN)


def test_a_running_job_is_asked_to_stop(platform: Platform) -> None:
    _, job_id = submitted(platform)
    platform.start_job(StartJob(job_id, platform.get_job(job_id).version, "proc-1"), PROC)
    assert platform.cancel_job(CancelJob(job_id), ADMIN)[0] == "cancel_requested"


def test_retry_only_after_a_failure_or_a_cancel(platform: Platform) -> None:
    _, job_id = submitted(platform)
    with pytest.raises(Conflict, match="only failed or cancelled"):
        platform.retry_job(RetryJob(job_id), ALICE)
    platform.cancel_job(CancelJob(job_id), ALICE)
    platform.retry_job(RetryJob(job_id), ALICE)
    job = platform.get_job(job_id)
    assert job.status == "pending" and job.attempt == 2


def test_edit_is_for_pending_jobs_and_revalidates_parameters(platform: Platform) -> None:
    _, job_id = submitted(platform)
    with pytest.raises(InvalidCommand) as info:
        platform.update_job(UpdateJob(job_id, parameters={"text": ""}), ALICE)
    assert problem_errors(info.value) is not None and problem_errors(info.value)[0]["loc"][:3] == ["body", "parameters", "text"]  # type: ignore[index]
    with pytest.raises(InvalidCommand):
        platform.update_job(UpdateJob(job_id, priority="urgent"), ALICE)
    platform.update_job(UpdateJob(job_id, priority="high"), ALICE)
    assert platform.get_job(job_id).priority == "high"
    platform.start_job(StartJob(job_id, platform.get_job(job_id).version, "proc-1"), PROC)
    with pytest.raises(Conflict, match="only pending jobs"):
        platform.update_job(UpdateJob(job_id, priority="low"), ALICE)


def test_an_archived_job_is_gone_for_people_but_not_for_processors(platform: Platform) -> None:
    _, job_id = submitted(platform)
    platform.archive_job(ArchiveJob(job_id), ALICE)
    job = platform.get_job(job_id)
    assert job.archived and job.status == "cancelled"
    for ctx in (ALICE, ADMIN):
        with pytest.raises(NotFound):
            platform.retry_job(RetryJob(job_id), ctx)
        with pytest.raises(NotFound):
            platform.archive_job(ArchiveJob(job_id), ctx)


def test_projects_belong_to_their_owner_and_archived_ones_are_gone(platform: Platform) -> None:
    with pytest.raises(Forbidden):
        platform.create_project(CreateProject("p"), VIEWER)
    project_id, _ = platform.create_project(CreateProject("p"), ALICE)
    with pytest.raises(NotFound):
        platform.update_project(UpdateProject(project_id, name="mine now"), BOB)
    with pytest.raises(Forbidden):
        platform.update_project(UpdateProject(project_id, name="mine now"), VIEWER)
    platform.update_project(UpdateProject(project_id, name="renamed"), ADMIN)
    platform.archive_project(ArchiveProject(project_id), ALICE)
    for ctx in (ALICE, VIEWER, ADMIN):
        with pytest.raises(NotFound):
            platform.update_project(UpdateProject(project_id, name="again"), ctx)


def test_archiving_a_project_cancels_its_open_jobs_in_one_transaction() -> None:
    open_jobs: list[str] = []
    platform = Platform({"PERSISTENCE_MODULE": "eventsourcing.popo"}, policies=Policies(open_job_ids=lambda _p: open_jobs))
    project_id, job_id = submitted(platform)
    open_jobs.append(str(job_id))
    position = platform.archive_project(ArchiveProject(project_id), ALICE)
    assert platform.get_job(job_id).status == "cancelled"
    assert position == platform.head()
