"""The job-side read models' rows (results, logs, dead letters) and the routing of events
to read models: every read model declares what it handles (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from events import DomainEvent, JobCompleted, JobDeadLettered, JobLogsAppended, JobProgressed, JobSubmitted, UserLoggedOut
from events.enums import FINISHED_STATUSES, PRIORITY_RANK, JobStatus, Priority
from events.webhooks import WebhookSecretRotated
from projections import tables as t
from projections.readmodels import ALL, ReadModels
from projections.readmodels.dead_letters import dead_letter_row
from projections.readmodels.logs import log_rows
from projections.readmodels.results import result_row
from tests.unit.readmodel_events import at, make


def test_a_result_row_carries_files_meta_and_owner() -> None:
    event = make(JobCompleted, 5, result={"files": [{"name": "a.wav"}], "meta": {"voice": "v"}})
    row = result_row(event, 40, "u-1")
    assert row["id"] == row["job_id"] == str(event.originator_id)
    assert row["files"] == [{"name": "a.wav"}] and row["meta"] == {"voice": "v"} and row["owner_id"] == "u-1"
    assert row["finished_at"] == at(5) and row["position"] == 40


def test_a_result_without_files_or_meta_or_known_owner() -> None:
    row = result_row(make(JobCompleted, 5, result={}), 40, None)
    assert (row["files"], row["meta"], row["owner_id"]) == ([], {}, "")


def test_log_lines_are_numbered_within_their_event() -> None:
    lines = [
        {"at": "2026-01-01T00:00:01+00:00", "level": "warning", "message": "a"},
        {"at": "2026-01-01T00:00:02+00:00", "message": "b"},
    ]
    rows = log_rows(make(JobLogsAppended, 3, lines=lines), 21)
    assert [(r["position"], r["seq"], r["level"], r["message"]) for r in rows] == [(21, 0, "warning", "a"), (21, 1, "info", "b")]
    assert rows[1]["at"] == datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)


def test_a_log_line_without_a_time_cannot_be_stored() -> None:
    with pytest.raises(KeyError):
        log_rows(make(JobLogsAppended, 3, lines=[{"message": "x"}]), 21)


def test_a_dead_letter_names_the_jobs_type_and_owner() -> None:
    event = make(JobDeadLettered, 6, code="engine_error", message="boom", attempts=3, type="tts")
    row = dead_letter_row(event, 50, "stt", "u-1")
    assert (row["type"], row["owner_id"], row["code"], row["attempts"]) == ("stt", "u-1", "engine_error", 3)
    assert row["dead_lettered_at"] == at(6) and dead_letter_row(event, 50, None, None)["owner_id"] == ""


def test_each_read_model_registers_exactly_what_it_declares() -> None:
    for model in ALL:
        registered = set(model.__dict__["process_event"].dispatcher.registry) - {object}
        declared = set(model.handles)
        assert all(any(issubclass(r, d) for d in declared) for r in registered), model.__name__
        assert model.handles, model.__name__


def test_events_reach_the_read_models_that_handle_them_in_order() -> None:
    models = ReadModels(t.generation(1))
    names = [type(m).__name__ for m in models.handling(JobSubmitted)]
    assert names == ["ProjectsProjection", "JobsProjection"]  # the count sees the job as new
    assert [type(m).__name__ for m in models.handling(JobCompleted)] == ["JobsProjection", "ResultsProjection"]
    assert [type(m).__name__ for m in models.handling(UserLoggedOut)] == ["SessionsProjection"]
    assert [type(m).__name__ for m in models.handling(WebhookSecretRotated)] == ["WebhookEndpointsProjection"]
    assert models.handling(DomainEvent) == []


def test_events_no_read_model_handles_are_skipped() -> None:
    class Unknown(DomainEvent):
        pass

    models = ReadModels(t.generation(1))
    models.apply(make(Unknown, 2), None, 1)  # type: ignore[arg-type]  # reaches no table
    assert models.handling(JobProgressed) == [m for m in models.models if type(m).__name__ == "JobsProjection"]


def test_statuses_and_priorities_are_their_strings() -> None:
    assert JobStatus.RUNNING == "running" and f"{JobStatus.FAILED}" == "failed"
    assert {s for s in JobStatus if s.finished} == FINISHED_STATUSES
    assert sorted(Priority, key=lambda p: p.rank) == [Priority.LOW, Priority.NORMAL, Priority.HIGH]
    assert PRIORITY_RANK["high"] == Priority.HIGH.rank == 2 and Priority.rank_of("urgent") == 1
