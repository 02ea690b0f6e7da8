"""Least privilege (issue 13, finding 11): the roles connect as an application role that
cannot change the record, and the data folder is private."""

from __future__ import annotations

import stat
import threading
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import PersistenceError
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from api.audit import audit_log
from commands.context import Actor, Context
from commands.messages import CreateProject
from infra.roles import create_user
from projections import tables as t
from tests.conftest import wait_until

TAMPERING = [
    "TRUNCATE audit_log",
    "UPDATE audit_log SET outcome = 'ok'",
    "DELETE FROM audit_log",
    "UPDATE aiorch_events SET topic = topic",
    "DELETE FROM aiorch_events",
    "TRUNCATE aiorch_events",
    "ALTER TABLE aiorch_events DISABLE TRIGGER USER",
    "DROP TRIGGER aiorch_events_no_change ON aiorch_events",
    "DROP TABLE aiorch_events CASCADE",
]


def _counts(system: Any) -> tuple[int, int]:
    with system.engine.connect() as conn:
        events = conn.execute(text("SELECT count(*) FROM aiorch_events")).scalar_one()
        audits = conn.execute(select(func.count()).select_from(audit_log)).scalar_one()
    return int(events), int(audits)


def test_the_app_role_cannot_change_the_store_or_the_audit_log(system: Any, settings: Any) -> None:
    user_id = create_user(system, "editor", "editor-password", "editor")
    ctx = Context(Actor(user_id, "editor", "editor"), "privilege")
    system.platform.create_project(CreateProject("before"), ctx)
    with system.engine.begin() as conn:
        who, superuser = conn.execute(text("SELECT current_user, usesuper FROM pg_user WHERE usename = current_user")).one()
        conn.execute(insert(audit_log).values(at=func.now(), command="Probe", outcome="ok", status=200, request_id="r1"))
    assert not superuser and who != (make_url(settings.database_url).username or "postgres")
    before = _counts(system)

    for statement in TAMPERING:
        with pytest.raises(DBAPIError), system.engine.begin() as conn:
            conn.execute(text(statement))
    # the event store's own connection (eventsourcing's pool) is the same role
    for statement in ("UPDATE aiorch_events SET state = ''::bytea", "DELETE FROM aiorch_events", "TRUNCATE aiorch_events"):
        with pytest.raises(PersistenceError), system.platform.recorder.datastore.transaction(commit=True) as curs:
            curs.execute(statement)
    assert _counts(system) == before

    # ...and the system still works: appends succeed, read models project, rebuilds run
    project_id, position = system.platform.create_project(CreateProject("after"), ctx)
    projector = system.projector()
    thread = threading.Thread(target=projector.run_forever, daemon=True)
    thread.start()
    try:
        wait_until(lambda: system.projector_position() >= position, 30, message="the projector to catch up")
    finally:
        projector.stop()
        thread.join(20)
    with system.engine.connect() as conn:
        assert conn.execute(select(t.projects.c.name).where(t.projects.c.id == str(project_id))).scalar_one() == "after"
    from projections.operations import rebuild

    rebuild(system.engine, system.platform.recorder, system.platform.mapper.to_domain_event)
    with system.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.projects)).scalar_one() == 2


def test_the_owner_is_refused_too_and_the_schema_step_is_idempotent(system: Any, settings: Any) -> None:
    from infra.bootstrap import bootstrap
    from infra.db import conninfo

    create_user(system, "someone", "someone-password", "viewer")  # an event: row triggers fire per row
    with psycopg.connect(conninfo(settings.database_url), autocommit=True) as conn:  # the superuser
        conn.execute("INSERT INTO audit_log (at, command, outcome, status, request_id) VALUES (now(), 'X', 'ok', 200, 'r')")
        for statement in ("UPDATE audit_log SET status = 500", "TRUNCATE audit_log", "DELETE FROM aiorch_events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)
    again = bootstrap(settings)  # a role started alone runs the schema step again
    try:
        with again.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(audit_log)).scalar_one() == 1
    finally:
        again.close()


def test_a_configured_app_role_is_created_and_used(settings: Any, pg_server_url: str) -> None:
    from infra.bootstrap import bootstrap

    role = f"aiorch_cfg_{uuid.uuid4().hex[:8]}"
    app_url = make_url(settings.database_url).set(username=role, password="cfg-password")
    configured = settings.model_copy(update={"app_database_url": app_url.render_as_string(hide_password=False)})
    system = bootstrap(configured)
    try:
        with system.engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar_one() == role
            with pytest.raises(DBAPIError):
                conn.execute(text("TRUNCATE aiorch_events"))
    finally:
        system.close()
        with psycopg.connect(make_url(settings.database_url).render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP ROLE "{role}"')


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_folder_and_its_secrets_are_private(settings: Any) -> None:
    from infra.secrets import fernet, secret_key, secure_data_dir, write_private

    data = settings.data_dir
    data.mkdir(parents=True)
    data.chmod(0o755)  # as an earlier version left it
    (data / "encryption_key").write_text("kept-by-an-earlier-version")
    (data / "encryption_key").chmod(0o644)
    generated = settings.model_copy(update={"secret_key": None, "encryption_key": None})
    assert secret_key(generated) and fernet(generated)
    write_private(settings.runtime_file, "{}")
    assert _mode(data) == 0o700
    for name in ("secret_key", "encryption_key", "runtime.json"):
        assert _mode(data / name) == 0o600, name
    assert (data / "encryption_key").read_text() == "kept-by-an-earlier-version"
    assert sorted(p.name for p in data.iterdir()) == ["encryption_key", "runtime.json", "secret_key"]  # no temporaries left
    assert secure_data_dir(settings) == data and _mode(data) == 0o700


def test_read_models_an_earlier_version_created_as_the_owner_are_handed_over(settings: Any) -> None:
    from api import tickets as live  # the live feed's tickets (api/tickets.py since the split)
    from infra.bootstrap import bootstrap
    from infra.db import make_engine
    from projections.generations import ensure_serving, serving_generation
    from projections.operations import rebuild

    owner = make_engine(settings.database_url, pool_size=1)  # as earlier versions connected
    ensure_serving(owner)
    live.metadata.create_all(owner)
    owner.dispose()
    system = bootstrap(settings)
    try:
        create_user(system, "someone", "someone-password", "viewer")
        rebuild(system.engine, system.platform.recorder, system.platform.mapper.to_domain_event)  # drops generation 1
        with system.engine.connect() as conn:
            assert serving_generation(conn) == 2
            assert conn.execute(select(func.count()).select_from(t.users)).scalar_one() == 1
    finally:
        system.close()
