"""The schema step (:mod:`infra.schema`): every table is created by one step under one
advisory lock, so roles started at the same moment on a brand-new database never race on
DDL, and the first ``aiorch up`` logs no DDL error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import psycopg

from infra.embedded import free_port
from tests.conftest import REPO, wait_until

#: what each role builds before it runs (``aiorch <role>``), after the schema step of its
#: bootstrap; every child waits at a barrier (the file ``go``) with its imports done, so that
#: their bootstraps start at the same moment
CHILD = r"""
import os, sys, time
from pathlib import Path

import processors.engines  # noqa: F401 - imported before the barrier, like everything else
from infra import roles
from infra.bootstrap import bootstrap
from infra.dispatcher import build_dispatcher
from infra.settings import load_settings

role, barrier = sys.argv[1], Path(sys.argv[2])
(barrier / f"ready-{os.getpid()}").touch()
while not (barrier / "go").exists():
    time.sleep(0.001)
system = bootstrap(load_settings())
if role == "api":
    roles.bootstrap_admin(system)
    roles.api_app(system)
elif role == "relay":
    roles.relay(system).close()
elif role == "projector":
    system.projector().generation()
elif role == "dispatcher":
    build_dispatcher(system)
elif role == "processor":
    roles.processor(system, ["tts"])
elif role == "cli":
    from projections.operations import status

    status(system.engine, system.platform.recorder, system.platform.mapper.to_domain_event)
print("wired", role, flush=True)
os._exit(0)  # the roles' threads (pools, waiters) are not the point here
"""

ROLES = ("api", "api", "relay", "projector", "projector", "dispatcher", "processor", "processor", "cli")

#: what a DDL race prints (PostgreSQL's words, and the exceptions psycopg raises for them)
DDL_ERRORS = ("Traceback", "tuple concurrently updated", "UniqueViolation", "DuplicateTable", "DuplicateObject")


def role_env(settings: Any) -> dict[str, str]:
    """The environment of a role started as its own process on the test's database."""
    s = settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIORCH_")}
    return {
        **env,
        "PYTHONPATH": str(REPO),
        "AIORCH_DATABASE_URL": s.database_url,
        "AIORCH_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
        "AIORCH_DATA_DIR": str(s.data_dir),
        "AIORCH_MODEL_DIR": str(s.resolved_model_dir),
        "AIORCH_TOPIC_PREFIX": s.topic_prefix,
        "AIORCH_CONSUMER_GROUP": s.consumer_group,
        "AIORCH_SECRET_KEY": s.secret_key,
        "AIORCH_BOOTSTRAP_ADMIN": "admin:admin-password",
    }


def _tables(database_url: str) -> dict[str, str]:
    """``{name: owner}`` of every table and view of the public schema."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v')"
        ).fetchall()
    return {str(name): str(owner) for name, owner in rows}


def test_roles_started_at_the_same_moment_on_a_new_database_create_every_table(settings: Any, tmp_path: Path) -> None:
    from infra.db import app_role_name
    from infra.schema import app_tables

    assert _tables(settings.database_url) == {}  # brand new
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = role_env(settings)
    children = []
    for i, role in enumerate(ROLES):
        log = tmp_path / f"{i}-{role}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, role, str(barrier)], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
            )
        children.append((role, proc, log))
    try:
        wait_until(lambda: len(list(barrier.glob("ready-*"))) == len(ROLES), 180, 0.05, "every role to import")
        (barrier / "go").touch()
        for _role, proc, _log in children:
            proc.wait(180)
    finally:
        for _role, proc, _log in children:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    for role, proc, log in children:
        out = log.read_text(errors="replace")
        assert proc.returncode == 0 and f"wired {role}" in out, (role, out[-4000:])
        assert not [words for words in DDL_ERRORS if words in out], (role, out[-4000:])

    tables = _tables(settings.database_url)
    app_role = app_role_name(settings.database_url)
    for owner in app_tables():
        for name in owner.names:
            assert tables.get(name) == app_role, (owner.module, name, tables.get(name))
    assert {"rm_jobs_g1", "rm_users_g1", "rm_jobs"} <= set(tables)  # generation 1 and its views
    owner_role = tables["aiorch_events"]
    assert tables["audit_log"] == owner_role != app_role  # the append-only tables stay the owner's
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        held = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        ).fetchone()
        assert held is not None and held[0] == 0  # every step released its lock


def test_a_rebuild_creates_its_generation_by_the_schema_step(system: Any) -> None:
    from infra.schema import ensure_generation
    from projections.generations import serving_generation
    from projections.operations import rebuild

    made: list[int] = []

    def create(engine: Any, generation: int) -> None:
        made.append(generation)
        ensure_generation(engine, generation)

    new = rebuild(system.engine, system.platform.recorder, system.platform.mapper.to_domain_event, create=create)
    assert made == [new] == [2]
    with system.engine.connect() as conn:
        assert serving_generation(conn) == 2
    assert "rm_jobs_g2" in _tables(system.settings.database_url)


def test_the_first_aiorch_up_logs_no_ddl_error(model_dir: Path) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="aiorch-schema-", dir="/tmp"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIORCH_")}
    env.update(AIORCH_DATA_DIR=str(data_dir), AIORCH_MODEL_DIR=str(model_dir), PYTHONPATH=str(REPO))
    log_path = data_dir / "up.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "up", "--port", str(port), "--processors", "2", "--types", "tts"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        assert proc.poll() is None, log_path.read_text(errors="replace")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def processors_beat() -> bool:  # both processors past their start, as every other role
        url = json.loads((data_dir / "runtime.json").read_text())["database_url"]
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM processor_members").fetchone()
        return row is not None and row[0] >= 2

    try:
        wait_until(ready, 120, 0.5, "aiorch up to serve")
        wait_until(processors_beat, 60, 0.2, "both processors to beat")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    text = log_path.read_text(errors="replace")
    assert code == 0, text[-6000:]
    assert not [words for words in DDL_ERRORS if words in text], text[-6000:]
