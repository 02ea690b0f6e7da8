"""The store-history reader on real PostgreSQL: keyset pages by global position, counts,
versions at a position or a time (in SQL, and by decoding: the same answer), and the job
folded from its stored events equal to the row the projector wrote."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from commands.context import Actor, Context
from commands.messages import CreateProject, StartJob, SubmitJob, UpdateProgress
from infra.roles import create_user
from projections import tables as t
from projections.history import StoreHistory

PROC = Context(Actor("proc-s", None, "processor"), "run-s")


class SqlOnly(StoreHistory):
    """A reader that must not decode a whole history (times are read in SQL)."""

    def walk(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the whole history was decoded")


def a_job_with_events(system: Any, progress_reports: int) -> uuid.UUID:
    user_id = create_user(system, "reader", "reader-password", "editor")
    ctx = Context(Actor(user_id, "reader", "editor"), "hist")
    project = system.platform.create_project(CreateProject("h"), ctx)[0]
    job_id = system.platform.submit_job(SubmitJob(project, "tts", {"text": "x"}), ctx)[0]
    system.platform.submit_job(SubmitJob(project, "tts", {"text": "another job between"}), ctx)
    system.platform.start_job(StartJob(job_id, system.platform.get_job(job_id).version, "proc-s"), PROC)
    for i in range(progress_reports):
        system.platform.update_progress(UpdateProgress(job_id, i, f"s{i}"), PROC)
    return job_id


def test_pages_counts_and_versions_come_from_sql(system: Any) -> None:
    job_id = a_job_with_events(system, 12)
    history = StoreHistory.of_store(system.engine, system.platform.recorder, system.platform.mapper)
    every = list(history.walk(job_id, batch=5))
    assert [e.originator_version for _, e in every] == list(range(1, 15))
    positions = [p for p, _ in every]
    assert positions == sorted(positions) and history.count(job_id) == 14
    assert history.page(job_id, after=positions[3], limit=4) == every[4:8]
    assert history.page(job_id, after=positions[3], limit=4, offset=4) == every[8:12]
    assert history.count(job_id, after=positions[3]) == 10
    assert list(history.walk(job_id, after=positions[1], upto=positions[5])) == every[2:6]
    assert history.version_at(job_id, positions[0] - 1) == 0 and history.version_at(job_id, positions[6]) == 7
    sql_only = SqlOnly.of_store(system.engine, system.platform.recorder, system.platform.mapper)
    decoding = StoreHistory(system.engine, system.platform.recorder.events_table_name, history.decode, plain_json=False)
    for _, event in (every[0], every[7], every[-1]):
        assert sql_only.version_at_time(job_id, event.timestamp) == decoding.version_at_time(job_id, event.timestamp)
        assert sql_only.version_at_time(job_id, event.timestamp) >= event.originator_version
    before = every[0][1].timestamp.replace(year=2000)
    assert sql_only.version_at_time(job_id, before) == decoding.version_at_time(job_id, before) == 0


def test_the_fold_of_the_stored_events_is_the_projected_row(system: Any) -> None:
    job_id = a_job_with_events(system, 3)
    projector = system.projector()
    projector.create_tables()
    while projector.run_once():
        pass
    history = StoreHistory.of_store(system.engine, system.platform.recorder, system.platform.mapper)
    with system.engine.connect() as conn:
        row = conn.execute(select(t.jobs).where(t.jobs.c.id == str(job_id))).mappings().one()
    assert history.job_at(job_id, row["version"]).as_dict() == dict(row)
