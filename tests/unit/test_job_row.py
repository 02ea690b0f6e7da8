"""The job row fold: given these events, this row (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from commands.context import Actor, Context
from commands.messages import CancelJob, CompleteJob, CreateProject, CreateUser, StartJob, SubmitJob, UpdateProgress
from commands.service import Platform
from events import (
    JobArchived,
    JobCancelled,
    JobCancelRequested,
    JobCompleted,
    JobDeadLettered,
    JobFailed,
    JobLogsAppended,
    JobProgressed,
    JobRetried,
    JobStarted,
    JobSubmitted,
    JobUpdated,
    UserCreated,
)
from events.enums import JobStatus
from projections.readmodels.job_row import JOB_EVENTS, JobRow, fold_job, job_changes, job_row
from tests.unit.readmodel_events import at, make

LINES = [{"at": "2026-01-01T00:00:00+00:00", "level": "info", "message": "hello"}]


def submitted(**fields: Any) -> JobSubmitted:
    base: dict[str, Any] = {
        "project_id": "p-1",
        "owner_id": "u-1",
        "type": "tts",
        "parameters": {"text": "hi"},
        "input_files": {},
        "priority": "normal",
        "agent_id": None,
        "idempotency_key": None,
        "request_hash": None,
    }
    return make(JobSubmitted, 1, **(base | fields))


def pending() -> JobRow:
    return job_row(None, submitted(), 10)


def running(version: int = 2) -> JobRow:
    return job_row(pending(), make(JobStarted, version, processor_id="proc-1", attempt=1), 11)


def test_submitted_is_pending_queued_attempt_one() -> None:
    row = pending()
    assert (row.status, row.progress, row.stage, row.attempt) == ("pending", 0, "queued", 1)
    assert (row.id, row.project_id, row.type, row.priority) == (str(submitted().originator_id), "p-1", "tts", "normal")
    assert row.created_by_id == "u-1" and row.created_by_username == "alice"
    assert row.created_at == row.updated_at == at(1)
    assert (row.version, row.position) == (1, 10)
    assert row.started_at is None and row.finished_at is None and row.error is None
    assert not (row.has_result or row.cancel_requested or row.archived or row.demo)


def test_submitted_keeps_the_demo_flag_agent_and_files() -> None:
    files = {"input_file": {"blob": "b", "name": "a.wav", "size": 3, "content_type": "audio/wav", "sha256": "x"}}
    row = job_row(None, submitted(demo=True, agent_id="a-1", input_files=files, priority="high"))
    assert row.demo and row.agent_id == "a-1" and row.input_files == files and row.priority == "high"
    assert row.position == 0


def test_started_is_running_on_its_processor() -> None:
    row = running()
    assert (row.status, row.stage, row.processor_id, row.attempt) == ("running", "started", "proc-1", 1)
    assert row.started_at == at(2) == row.updated_at and row.version == 2 and row.position == 11
    assert row.status is JobStatus.RUNNING


def test_progressed_moves_progress_and_stage() -> None:
    row = job_row(running(), make(JobProgressed, 3, progress=40, stage="synthesizing"), 12)
    assert (row.progress, row.stage, row.status) == (40, "synthesizing", "running")
    assert (row.version, row.position, row.updated_at) == (3, 12, at(3))


def test_logs_only_move_version_and_time() -> None:
    before = running()
    row = job_row(before, make(JobLogsAppended, 3, lines=LINES), 12)
    assert row.replace(version=2, position=11, updated_at=at(2)) == before
    assert (row.version, row.position, row.updated_at) == (3, 12, at(3))


def test_completed_is_done_with_a_result() -> None:
    row = job_row(running(), make(JobCompleted, 3, result={"files": [], "meta": {}}), 12)
    assert (row.status, row.progress, row.stage, row.has_result) == ("completed", 100, "done", True)
    assert row.finished_at == at(3)


def test_failed_keeps_its_error() -> None:
    row = job_row(running(), make(JobFailed, 3, code="engine_error", message="boom"), 12)
    assert (row.status, row.stage, row.finished_at) == ("failed", "failed", at(3))
    assert row.error == {"code": "engine_error", "message": "boom"}


def test_cancel_requested_marks_a_running_job() -> None:
    row = job_row(running(), make(JobCancelRequested, 3, reason="stop"), 12)
    assert row.cancel_requested and row.status == "running"


def test_cancelled_is_finished_with_the_reason() -> None:
    row = job_row(pending(), make(JobCancelled, 2, reason="not needed"), 11)
    assert (row.status, row.stage, row.cancel_requested, row.finished_at) == ("cancelled", "cancelled", True, at(2))
    assert row.error == {"code": "cancelled", "message": "not needed"}


def test_retried_resets_the_attempt_to_pending() -> None:
    failed = job_row(running(), make(JobFailed, 3, code="engine_error", message="boom"), 12)
    row = job_row(failed, make(JobRetried, 4, attempt=2, reason="again", type="tts", priority="normal", not_before=None), 13)
    assert (row.status, row.attempt, row.progress, row.stage) == ("pending", 2, 0, "queued")
    assert row.processor_id is None and row.started_at is None and row.finished_at is None and row.error is None
    assert not row.has_result and not row.cancel_requested


def test_dead_lettered_changes_only_version_and_time() -> None:
    failed = job_row(running(), make(JobFailed, 3, code="timed_out", message="slow"), 12)
    row = job_row(failed, make(JobDeadLettered, 4, code="timed_out", message="slow", attempts=3, type="tts"), 13)
    assert row == failed.replace(version=4, position=13, updated_at=at(4))


def test_archived_hides_the_job() -> None:
    row = job_row(pending(), make(JobArchived, 2), 11)
    assert row.archived and row.status == "pending"


def test_updated_sets_the_changed_fields() -> None:
    row = job_row(pending(), make(JobUpdated, 2, changes={"priority": "high", "parameters": {"text": "new"}}), 11)
    assert row.priority == "high" and row.parameters == {"text": "new"}


def test_update_of_an_unknown_column_is_refused() -> None:
    with pytest.raises(TypeError):
        job_row(pending(), make(JobUpdated, 2, changes={"colour": "red"}))


def test_an_event_before_submission_or_a_second_submission_is_refused() -> None:
    with pytest.raises(ValueError):
        job_row(None, make(JobStarted, 2, processor_id="p", attempt=1))
    with pytest.raises(ValueError):
        job_row(pending(), submitted())


def test_a_non_job_event_is_refused() -> None:
    with pytest.raises(TypeError):
        job_row(pending(), make(UserCreated, 2, username="x", role="editor", email=None, password_hash="h"))


def test_changes_never_read_the_previous_row() -> None:
    event = make(JobProgressed, 3, progress=70, stage="mixing")
    assert job_changes(event) == {"progress": 70, "stage": "mixing"}
    assert job_row(running(), event).progress == job_row(running().replace(progress=5), event).progress


def test_every_job_event_class_has_a_transition() -> None:
    assert len(JOB_EVENTS) == 12
    for cls in JOB_EVENTS[1:]:
        assert job_changes.dispatch(cls) is not job_changes.dispatch(object), cls.__name__


def test_fold_job_of_nothing_is_none_and_of_pairs_is_the_last_row() -> None:
    assert fold_job([]) is None
    events = [(10, submitted()), (11, make(JobStarted, 2, processor_id="p", attempt=1)), (15, make(JobArchived, 3))]
    row = fold_job(events)
    assert row is not None and row.archived and row.position == 15 and row.version == 3


def test_as_dict_has_every_column_of_rm_jobs() -> None:
    from projections import tables as t

    assert set(pending().as_dict()) == {c.name for c in t.jobs.columns}


def test_the_fold_agrees_with_the_aggregate_through_commands() -> None:
    platform = Platform(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    setup = Context(Actor("system", "system", "admin"), "setup")
    user_id, _ = platform.create_user(CreateUser("alice", "password-123", "editor"), setup)
    alice = Context(Actor(str(user_id), "alice", "editor"), "req")
    project_id, _ = platform.create_project(CreateProject("p"), alice)
    job_id, _ = platform.submit_job(SubmitJob(project_id, "tts", {"text": "x"}), alice)
    proc = Context(Actor("proc-1", None, "processor"), "run")
    platform.start_job(StartJob(job_id, platform.get_job(job_id).version, "proc-1"), proc)
    platform.update_progress(UpdateProgress(job_id, 30, "talking", [dict(LINES[0])]), proc)
    platform.cancel_job(CancelJob(job_id, "enough"), alice)
    platform.complete_job(CompleteJob(job_id, {"files": [], "meta": {}}, "proc-1"), proc)
    stored = [n for n in platform.recorder.select_notifications(1, 100) if n.originator_id == job_id]
    row = fold_job((n.id, platform.mapper.to_domain_event(n)) for n in stored)
    job = platform.get_job(job_id)
    assert row is not None
    assert (row.status, row.progress, row.stage, row.attempt) == (job.status, job.progress, job.stage, job.attempt)
    assert (row.cancel_requested, row.has_result, row.version) == (job.cancel_requested, True, job.version)
    assert (row.created_at, row.updated_at, row.finished_at) == (job.created_on, job.modified_on, job.finished_at)
    assert row.created_by_username == "alice" and row.position == stored[-1].id
