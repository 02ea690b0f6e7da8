"""Job rows as of a version from in-memory checkpoints (projections.history.JobCheckpoints):
the same row as a fold of the whole history, and only the events after the nearest
checkpoint read."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from commands.context import Actor, Context, acting_as
from commands.messages import CreateProject, StartJob, SubmitJob
from commands.service import Platform
from events import DomainEvent
from projections.history import Entry, JobCheckpoints
from projections.readmodels.job_row import fold_job

ALICE = Context(Actor("alice-id", "alice", "editor"), "r")
ADMIN = Context(Actor("root-id", "root", "admin"), "r")
PROC = Context(Actor("proc-1", None, "processor"), "r")


class CountingHistory:
    """StoreHistory's ``upto_version`` over a list of a job's events, counting events read."""

    def __init__(self, events: list[DomainEvent]) -> None:
        self.events, self.read = events, 0

    def upto_version(self, aggregate_id: UUID | str, version: int, *, after_version: int = 0) -> list[Entry]:
        out = [(e.originator_version * 10, e) for e in self.events if after_version < e.originator_version <= version]
        self.read += len(out)
        return out


@pytest.fixture
def events() -> list[DomainEvent]:
    platform = Platform({"PERSISTENCE_MODULE": "eventsourcing.popo"})
    project_id, _ = platform.create_project(CreateProject("p"), ALICE)
    job_id, _ = platform.submit_job(SubmitJob(project_id, "tts", {"text": "hello"}), ALICE)
    platform.start_job(StartJob(job_id, 1, "proc-1"), ADMIN)
    job = platform.get_job(job_id)
    with acting_as(PROC):
        for i in range(238):
            job.report_progress(i % 100, f"stage {i}")
    platform.save(job)
    stored = platform.recorder.select_notifications(0, 1000)
    return [platform.mapper.to_domain_event(n) for n in stored if n.originator_id == job_id]


def test_every_version_folds_to_the_same_row_as_the_whole_history(events: list[DomainEvent]) -> None:
    assert len(events) == 240
    history: Any = CountingHistory(events)
    checkpoints = JobCheckpoints(every=50)
    for version in (240, 7, 50, 51, 99, 100, 101, 1, 239, 150):
        whole = fold_job([(e.originator_version * 10, e) for e in events[:version]])
        assert checkpoints.job_at(history, events[0].originator_id, version) == whole


def test_only_the_events_after_the_nearest_checkpoint_are_read(events: list[DomainEvent]) -> None:
    history: Any = CountingHistory(events)
    checkpoints = JobCheckpoints(every=50)
    job_id = events[0].originator_id
    checkpoints.job_at(history, job_id, 240)
    assert history.read == 240
    history.read = 0
    assert checkpoints.job_at(history, job_id, 137).version == 137
    assert history.read == 37  # from the checkpoint at version 100
    history.read = 0
    assert checkpoints.job_at(history, job_id, 200).progress == events[199].progress  # type: ignore[attr-defined]
    assert history.read == 0  # a checkpoint itself


def test_a_missing_version_is_a_lookup_error_and_callers_get_copies(events: list[DomainEvent]) -> None:
    history: Any = CountingHistory(events)
    checkpoints = JobCheckpoints(every=50)
    with pytest.raises(LookupError):
        checkpoints.job_at(history, events[0].originator_id, 500)
    row = checkpoints.job_at(history, events[0].originator_id, 100)
    row.parameters["text"] = "changed by a caller"
    assert checkpoints.job_at(history, events[0].originator_id, 100).parameters["text"] == "hello"
