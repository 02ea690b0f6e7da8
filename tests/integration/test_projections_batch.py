"""The projector's merged batch writes on real PostgreSQL: a store of jobs through every
transition, projected with each event written at once and with a batch's writes merged per
row, gives the same rows in every read model, and ``audit verify`` finds the fold in them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from commands.context import Actor, Context, acting_as
from commands.messages import CreateProject, SubmitJob
from infra.roles import create_user
from infra.verify import verify
from projections import tables as t
from projections.generations import drop_generation
from projections.projector import Projector
from projections.sanitize import sanitize_event

PROC = Context(Actor("proc-b", None, "processor"), "run-b")


class OneByOne(Projector):
    """A projector that writes each event at once, unmerged (as before batches merged)."""

    def _apply_batch(self, conn: Any, projection: Any, name: str, notifications: Any) -> None:
        with conn.begin_nested():
            for n in notifications:
                projection.apply(sanitize_event(self.decode(n)), conn, n.id)


class MergedOnly(Projector):
    """A projector whose merged batch must succeed (no event-by-event fallback)."""

    def _apply_batch(self, conn: Any, projection: Any, name: str, notifications: Any) -> None:
        with conn.begin_nested():
            projection.apply_batch(((sanitize_event(self.decode(n)), n.id) for n in notifications), conn)


def rows(conn: Any, table: Any) -> list[str]:
    """Every row, sorted; log lines without their surrogate key."""
    skip = {"id"} if table.name.startswith("rm_job_logs") else set()
    return sorted(repr({k: v for k, v in r.items() if k not in skip}) for r in conn.execute(select(table)).mappings())


def change(system: Any, job_id: uuid.UUID, ctx: Context, *steps: Any) -> None:
    """Apply ``steps`` (callables of the job aggregate) and save them in one go."""
    job = system.platform.get_job(job_id)
    with acting_as(ctx):
        for step in steps:
            step(job)
    system.platform.save(job)


def lines(text: str) -> list[dict[str, Any]]:
    return [{"at": datetime.now(UTC).isoformat(), "level": "info", "message": text}]


def fill(system: Any) -> None:
    """Jobs through every transition, several saved in one go (so a batch holds them all)."""
    user_id = create_user(system, "batcher", "batcher-password", "editor")
    ctx = Context(Actor(user_id, "batcher", "editor"), "batch")
    project = system.platform.create_project(CreateProject("b"), ctx)[0]
    jobs = [system.platform.submit_job(SubmitJob(project, "tts", {"text": f"t{i}"}), ctx)[0] for i in range(6)]
    completed, failed, cancelled, dead, archived, edited = jobs
    change(system, edited, ctx, lambda j: j.update({"priority": "high", "parameters": {"text": "new"}}))
    for job_id in (completed, failed, cancelled, dead):
        change(system, job_id, PROC, lambda j: j.start("proc-b"))
    change(
        system,
        completed,
        PROC,
        *(lambda j, i=i: j.report_progress(i * 10, f"stage {i}") for i in range(1, 8)),
        lambda j: j.append_logs(lines("one")),
        lambda j: j.append_logs(lines("two") + lines("three")),
        lambda j: j.complete({"files": [], "meta": {"ok": True}}),
    )
    change(system, failed, PROC, lambda j: j.report_progress(50, "half"), lambda j: j.fail("engine_error", "boom"))
    change(system, failed, ctx, lambda j: j.retry("again"), lambda j: j.start("proc-b"), lambda j: j.report_progress(5, "s"))
    change(system, cancelled, ctx, lambda j: j.cancel("stop"))
    change(system, cancelled, PROC, lambda j: j.confirm_cancelled("stop"))
    change(
        system,
        dead,
        PROC,
        lambda j: j.end_attempt("engine_error", "boom", retryable=False, max_attempts=1, backoff_s=0),
    )
    change(system, archived, ctx, lambda j: j.cancel("gone"), lambda j: j.archive())


def test_merged_batches_write_what_one_event_at_a_time_writes(system: Any) -> None:
    fill(system)
    head = system.platform.head()
    generations = (71, 72)
    for generation, kind in zip(generations, (OneByOne, MergedOnly), strict=True):
        projector = kind(
            system.engine,
            system.platform.recorder,
            system.platform.mapper.to_domain_event,
            generation=generation,
            batch_size=500,
        )
        projector.create_tables()
        while projector.run_once(generation):
            pass
        assert projector.position() == head
    try:
        with system.engine.connect() as conn:
            one, merged = (t.generation(g) for g in generations)
            for name in t.NAMES:
                assert rows(conn, getattr(one, name)) == rows(conn, getattr(merged, name)), name
            assert len(rows(conn, merged.job_logs)) == 3 and len(rows(conn, merged.dead_letters)) == 1
            statuses = sorted(r.status for r in conn.execute(select(merged.jobs.c.status)))
            assert statuses == ["cancelled", "cancelled", "completed", "failed", "pending", "running"]
            assert conn.execute(select(merged.projects.c.jobs_count)).scalar_one() == 5
    finally:
        for generation in generations:
            drop_generation(system.engine, generation)
    serving = Projector(system.engine, system.platform.recorder, system.platform.mapper.to_domain_event)
    serving.create_tables()
    while serving.run_once():
        pass
    assert verify(system) == []
