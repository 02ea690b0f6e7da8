"""Projection operations on real services: blue/green rebuild under write load, standby
takeover, status, audit verify and the jobs history command."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import select, text

from commands.context import Actor, Context
from commands.messages import CreateProject, SubmitJob
from infra.roles import create_user
from infra.verify import verify
from projections import tables as t
from projections.generations import serving_generation
from projections.operations import rebuild, status
from tests.conftest import Client, wait_until


def editor_ctx(system: Any) -> tuple[Context, uuid.UUID]:
    user_id = create_user(system, "editor", "editor-password", "editor")
    ctx = Context(Actor(user_id, "editor", "editor"), "ops")
    return ctx, system.platform.create_project(CreateProject("p"), ctx)[0]


def rows(conn: Any, table: Any) -> list[str]:
    """Every row, sorted; log lines without their surrogate key (a sequence per table)."""
    skip = {"id"} if table.name.startswith("rm_job_logs") else set()
    return sorted(repr({k: v for k, v in r.items() if k not in skip}) for r in conn.execute(select(table)).mappings())


def test_rebuild_during_writes_serves_complete_read_models_and_equals_the_old(system: Any, runner: Any) -> None:
    ctx, project = editor_ctx(system)
    for i in range(300):
        system.platform.submit_job(SubmitJob(project, "tts", {"text": f"before {i}"}), ctx)
    runner.projector()
    base = runner.api()
    head = system.platform.head()
    wait_until(lambda: system.projector().position() >= head, 30)
    client = Client(base, "editor", "editor-password")
    stop = threading.Event()
    counts: list[int] = []

    def write() -> None:
        i = 0
        while not stop.is_set():
            system.platform.submit_job(SubmitJob(project, "tts", {"text": f"during {i}"}), ctx)
            i += 1

    def read() -> None:
        while not stop.is_set():
            resp = client.get("/api/jobs/", params={"page_size": 1})
            assert resp.status_code == 200
            counts.append(resp.json()["count"])

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for th in threads:
        th.start()
    with system.engine.connect() as conn:
        old = serving_generation(conn)
    new = rebuild(system.engine, system.platform.recorder, system.platform.mapper.to_domain_event, batch_size=100, keep_old=True)
    stop.set()
    for th in threads:
        th.join()
    assert new == (old or 0) + 1
    assert counts and min(counts) >= 300, "the API never served an empty or partial read model"
    assert counts == sorted(counts), "the job count never went backwards across the switch"

    # catch the old generation up (it stopped at the switch) and compare row for row
    from projections.projector import Projector

    final = system.platform.head()
    for gen in (old, new):
        p = Projector(system.engine, system.platform.recorder, system.platform.mapper.to_domain_event, generation=gen)
        while p.run_once(gen):
            pass
        assert p.position() == final
    with system.engine.connect() as conn:
        for name in t.NAMES:
            a, b = getattr(t.generation(old), name), getattr(t.generation(new), name)
            assert rows(conn, a) == rows(conn, b), name
        assert serving_generation(conn) == new
        assert conn.execute(text("SELECT count(*) FROM rm_jobs")).scalar_one() >= 300
    assert verify(system) == []


def test_a_standby_projector_takes_over_and_nothing_is_applied_twice(system: Any, runner: Any) -> None:
    ctx, project = editor_ctx(system)
    first, second = runner.projector(), runner.projector()
    wait_until(lambda: first.active or second.active, 10, message="one projector to become active")
    assert not (first.active and second.active)
    active, standby = (first, second) if first.active else (second, first)
    for i in range(50):
        system.platform.submit_job(SubmitJob(project, "tts", {"text": f"a{i}"}), ctx)
    runner.stop(active)  # the active one goes away
    wait_until(lambda: standby.active, 10, message="the standby to take over")
    for i in range(50):
        system.platform.submit_job(SubmitJob(project, "tts", {"text": f"b{i}"}), ctx)
    head = system.platform.head()
    wait_until(lambda: standby.position() >= head, 20)
    with system.engine.connect() as conn:
        assert conn.execute(select(t.projects.c.jobs_count)).scalar_one() == 100  # a counter: no double apply
    assert verify(system) == []
    report = status(system.engine, system.platform.recorder, system.platform.mapper.to_domain_event)
    serving = [r for r in report if r["role"] == "serving"]
    assert serving and serving[0]["lag_events"] == 0 and serving[0]["lag_seconds"] == 0


def test_verify_reports_a_tampered_row_and_the_cli_shows_history(system: Any, runner: Any, settings: Any) -> None:
    ctx, project = editor_ctx(system)
    job_id, _ = system.platform.submit_job(SubmitJob(project, "tts", {"text": "audited"}), ctx)
    runner.projector()
    head = system.platform.head()
    wait_until(lambda: system.projector().position() >= head)
    assert verify(system) == []
    with system.engine.begin() as conn:
        conn.execute(text("UPDATE rm_jobs SET status = 'completed' WHERE id = :id"), {"id": str(job_id)})
    problems = verify(system)
    assert len(problems) == 1 and str(job_id) in problems[0] and "status" in problems[0]
    env = {"AIORCH_DATABASE_URL": settings.database_url, "AIORCH_DATA_DIR": str(settings.data_dir), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "infra.cli", "audit", "verify"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1 and str(job_id) in out.stdout
    hist = subprocess.run(
        [sys.executable, "-m", "infra.cli", "jobs", "history", str(job_id), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert hist.returncode == 0 and '"type": "JobSubmitted"' in hist.stdout
    st = subprocess.run(
        [sys.executable, "-m", "infra.cli", "projections", "status"], env=env, capture_output=True, text=True, timeout=120
    )
    assert st.returncode == 0 and "read_models_g1" in st.stdout


def test_a_serving_generation_from_before_a_new_column_is_upgraded_at_start(system: Any, runner: Any) -> None:
    """A deployment whose read models predate ``rm_jobs.demo`` starts without a rebuild: the
    column is added with its default and the views show it; a column no earlier event gives
    a value for is refused with the rebuild command named."""
    from types import SimpleNamespace

    from sqlalchemy import Boolean, Column, MetaData

    from projections.generations import ensure_serving, upgrade_generation

    ctx, project = editor_ctx(system)
    job_id, _ = system.platform.submit_job(SubmitJob(project, "tts", {"text": "old"}), ctx)
    runner.projector()
    wait_until(lambda: system.projector().position() >= system.platform.head(), 30)
    with system.engine.begin() as conn:
        generation = serving_generation(conn)
        assert generation is not None
        table = t.generation(generation).jobs.name
        conn.execute(text(f'DROP VIEW "{t.jobs.name}"'))
        conn.execute(text(f'ALTER TABLE "{table}" DROP COLUMN demo'))
        conn.execute(text(f'CREATE VIEW "{t.jobs.name}" AS SELECT * FROM "{table}"'))
    assert ensure_serving(system.engine) == generation
    with system.engine.connect() as conn:
        demo = conn.execute(text(f'SELECT demo FROM "{t.jobs.name}" WHERE id = :id'), {"id": str(job_id)}).scalar()
        assert demo is False
        assert upgrade_generation(conn, generation) == []  # nothing left to add
    # a later version's tables: copies (t.generation is cached and shared by every test)
    copies = MetaData()
    later = SimpleNamespace(**{name: getattr(t.generation(generation), name).to_metadata(copies) for name in t.NAMES})
    later.jobs.append_column(Column("needs_a_rebuild", Boolean, nullable=False))
    with system.engine.begin() as conn, pytest.raises(RuntimeError, match="aiorch projections rebuild --all"):
        upgrade_generation(conn, generation, later)
