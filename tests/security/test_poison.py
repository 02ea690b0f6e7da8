"""Nothing stored can wedge a follower (issue 13, finding 1, read side): an event written
straight into the store that cannot be applied is parked, readiness says so, the next
command's read model still appears; the operator lists, retries and skips it from the
CLI; NUL stored before the boundary check projects as U+FFFD; rebuilds pass poison too."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from eventsourcing.utils import get_topic
from sqlalchemy import select, text
from typer.testing import CliRunner

from api.audit import audit_log
from commands.context import Actor, Context, acting_as
from commands.project import Project
from commands.setting import Setting
from events import ProjectCreated
from infra.cli import app as cli
from infra.db import conninfo
from infra.roles import create_user
from projections import tables as t
from projections.failures import PARKED, RELAY, RETRIED, SKIPPED
from projections.generations import serving_generation, tracking_name
from projections.operations import rebuild
from projections.projector import Projector
from projections.sanitize import REPLACEMENT
from tests.conftest import Client, Runner, wait_until

BOGUS_TOPIC = "nowhere.at.all:NoSuchEvent"


def store_raw(system: Any, topic: str, state: bytes) -> int:
    """Append one row straight into the event store, as eventsourcing's recorder does
    (table lock for a gapless notification order, ``notification_id`` from its sequence,
    NOTIFY on the events channel); returns its position."""
    table = f"{system.platform.name}_events"
    with psycopg.connect(conninfo(system.database_url)) as conn:
        conn.execute(f'LOCK TABLE "{table}" IN EXCLUSIVE MODE')
        row = conn.execute(
            f'INSERT INTO "{table}" (originator_id, originator_version, topic, state) VALUES (%s, 1, %s, %s) '
            "RETURNING notification_id",
            (uuid.uuid4(), topic, state),
        ).fetchone()
        conn.execute(f'NOTIFY "{table}"')
    assert row is not None
    return int(row[0])


def store_poison(system: Any) -> tuple[int, int]:
    """A topic with no class, and a real topic whose state is not JSON."""
    return store_raw(system, BOGUS_TOPIC, b'{"name": "x"}'), store_raw(system, get_topic(ProjectCreated), b"\x00\xffnot json")


def failure_rows(system: Any) -> dict[tuple[str, int], dict[str, Any]]:
    with system.engine.connect() as conn:
        return {(r["name"], r["position"]): dict(r) for r in conn.execute(select(t.failures)).mappings()}


def projector(system: Any, generation: int | None = None) -> Projector:
    return Projector(system.engine, system.platform.recorder, system.platform.mapper.to_domain_event, generation=generation)


def catch_up(p: Projector) -> None:
    while p.run_once():
        pass


def cli_env(system: Any) -> dict[str, str]:
    s = system.settings
    return {
        "AIORCH_DATABASE_URL": system.settings.database_url,
        "AIORCH_DATA_DIR": str(s.data_dir),
        "AIORCH_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
        "AIORCH_TOPIC_PREFIX": s.topic_prefix,
    }


def test_an_undecodable_event_is_parked_and_the_next_command_still_appears(system: Any, settings: Any) -> None:
    runner = Runner(system, {})
    try:
        live = runner.projector()
        relay = runner.relay()
        base = runner.api()
        create_user(system, "admin", "admin-password", "admin")
        editor_id = create_user(system, "editor", "editor-password", "editor")
        bogus, garbage = store_poison(system)
        wait_until(lambda: live.position() >= garbage and relay.position() >= garbage, 30, message="followers past the poison")
        name = tracking_name(1)
        rows = failure_rows(system)
        assert {k: r["state"] for k, r in rows.items()} == {
            (name, bogus): PARKED,
            (name, garbage): PARKED,
            (RELAY, bogus): PARKED,
            (RELAY, garbage): PARKED,
        }
        assert rows[(name, bogus)]["topic"] == BOGUS_TOPIC and rows[(name, bogus)]["error"]

        editor = Client(base, "editor", "editor-password")
        ready = editor.get("/health/ready").json()
        assert ready["status"] == "degraded" and ready["checks"]["projection_failures"] == 4, ready
        created = editor.post("/api/projects/", json={"name": "after the poison"})
        assert created.status_code == 201, created.text  # the read model appeared within the wait
        assert editor.get(f"/api/projects/{created.json()['id']}/").json()["owner"]["id"] == editor_id
        metrics = editor.get("/metrics").text
        assert f'aiorch_projection_parked_events{{projection="{name}"}} 2.0' in metrics
        assert f'aiorch_projection_failures_total{{projection="{RELAY}",state="parked"}} 2.0' in metrics

        env = cli_env(system)
        listed = CliRunner().invoke(cli, ["projections", "failures"], env=env)
        assert listed.exit_code == 0, listed.output
        assert str(bogus) in listed.output and BOGUS_TOPIC in listed.output and "parked" in listed.output

        retried = CliRunner().invoke(cli, ["projections", "retry", str(bogus), "--name", name], env=env)
        assert retried.exit_code == 1 and "still fails" in retried.output, retried.output
        assert failure_rows(system)[(name, bogus)]["state"] == PARKED

        skipped = CliRunner().invoke(cli, ["projections", "skip", str(bogus), "--reason", "written by hand"], env=env)
        assert skipped.exit_code == 0, skipped.output
        rows = failure_rows(system)
        assert rows[(name, bogus)]["state"] == SKIPPED and rows[(name, bogus)]["reason"] == "written by hand"
        assert rows[(RELAY, bogus)]["state"] == SKIPPED and rows[(name, garbage)]["state"] == PARKED
        with system.engine.connect() as conn:
            audit = conn.execute(select(audit_log).where(audit_log.c.command == "SkipProjectionFailure")).mappings().all()
        assert len(audit) == 1 and audit[0]["target"].startswith(str(bogus)) and audit[0]["actor_id"] == "system"
        assert editor.get("/health/ready").json()["checks"]["projection_failures"] == 2
        again = CliRunner().invoke(cli, ["projections", "skip", str(bogus), "--reason", "twice"], env=env)
        assert again.exit_code == 1, "only parked events can be skipped"
    finally:
        runner.close()


def test_a_nul_stored_before_the_boundary_check_projects_as_the_replacement_character(system: Any) -> None:
    owner = create_user(system, "editor", "editor-password", "editor")
    ctx = Context(Actor(owner, "editor", "editor"), "poison")
    with acting_as(ctx):  # the aggregate directly: no command validation on the way
        project = Project(name="evil\x00name", description="line\x00", owner_id=owner)
    system.platform.save(project)
    with acting_as(ctx):
        project.update({"description": "still\x00evil"})
        setting = Setting(key="theme", value={"k\x00": ["v\x00"]}, user_id=owner)  # a jsonb column
    system.platform.save(project, setting)
    p = projector(system)
    catch_up(p)
    assert p.position() == system.platform.head()
    with system.engine.connect() as conn:
        row = conn.execute(select(t.projects).where(t.projects.c.id == str(project.id))).mappings().one()
    assert row["name"] == f"evil{REPLACEMENT}name"
    assert row["description"] == f"still{REPLACEMENT}evil"
    with system.engine.connect() as conn:
        value = conn.execute(select(t.settings.c.value).where(t.settings.c.id == str(setting.id))).scalar()
    assert value == {f"k{REPLACEMENT}": [f"v{REPLACEMENT}"]}
    assert failure_rows(system) == {}, "sanitised, not parked"
    stored = system.platform.repository.get(project.id)
    assert stored.name == "evil\x00name", "the store keeps what it holds"


def test_a_refused_write_is_parked_alone_and_a_retry_applies_it_after_the_fix(system: Any) -> None:
    owner = create_user(system, "editor", "editor-password", "editor")
    ctx = Context(Actor(owner, "editor", "editor"), "poison")
    p = projector(system)
    catch_up(p)
    table = t.generation(1).projects.name
    with system.engine.begin() as conn:  # the read model refuses one name (a database error)
        conn.execute(text(f"ALTER TABLE \"{table}\" ADD CONSTRAINT no_blocked CHECK (name <> 'blocked')"))
    positions = []
    for name_ in ("before", "blocked", "after"):
        with acting_as(ctx):
            project = Project(name=name_, description="", owner_id=owner)
        positions.append((system.platform.save(project)[-1].notification.id, project.id))
    catch_up(p)
    with system.engine.connect() as conn:
        names = set(conn.execute(select(t.projects.c.name)).scalars())
    assert names == {"before", "after"}, "the events around the refused one are applied"
    (blocked_at, blocked_id) = positions[1]
    rows = failure_rows(system)
    assert list(rows) == [(tracking_name(1), blocked_at)] and "no_blocked" in rows[(tracking_name(1), blocked_at)]["error"]

    with system.engine.begin() as conn:
        conn.execute(text(f'ALTER TABLE "{table}" DROP CONSTRAINT no_blocked'))
    result = CliRunner().invoke(cli, ["projections", "retry", str(blocked_at)], env=cli_env(system))
    assert result.exit_code == 0, result.output
    assert failure_rows(system)[(tracking_name(1), blocked_at)]["state"] == RETRIED
    with system.engine.connect() as conn:
        assert conn.execute(select(t.projects.c.name).where(t.projects.c.id == str(blocked_id))).scalar() == "blocked"


def test_a_rebuild_parks_the_poison_event_in_its_generation_and_finishes(system: Any) -> None:
    owner = create_user(system, "editor", "editor-password", "editor")
    ctx = Context(Actor(owner, "editor", "editor"), "poison")
    bogus, garbage = store_poison(system)
    with acting_as(ctx):
        project = Project(name="after poison", description="", owner_id=owner)
    system.platform.save(project)
    catch_up(projector(system))
    skipped = CliRunner().invoke(cli, ["projections", "skip", str(bogus), "--reason", "junk"], env=cli_env(system))
    assert skipped.exit_code == 0, skipped.output

    new = rebuild(system.engine, system.platform.recorder, system.platform.mapper.to_domain_event, batch_size=2, grace_s=0)
    assert new == 2
    with system.engine.connect() as conn:
        assert serving_generation(conn) == 2
        assert conn.execute(select(t.projects.c.name).where(t.projects.c.id == str(project.id))).scalar() == "after poison"
    rows = failure_rows(system)
    assert {k: r["state"] for k, r in rows.items()} == {
        (tracking_name(2), bogus): SKIPPED,  # the operator's skip holds across the rebuild
        (tracking_name(2), garbage): PARKED,
    }, "the old generation's records went with it"
    assert "junk" in (rows[(tracking_name(2), bogus)]["reason"] or "")


def test_a_topic_whose_class_arrives_later_is_retried_for_the_projection_and_the_relay(system: Any) -> None:
    from eventsourcing.utils import register_topic

    from infra.roles import relay as build_relay

    owner = create_user(system, "editor", "editor-password", "editor")
    with acting_as(Context(Actor(owner, "editor", "editor"), "poison")):
        model = Project(name="moved", description="", owner_id=owner)
    system.platform.save(model)
    table = f"{system.platform.name}_events"
    with psycopg.connect(conninfo(system.database_url)) as conn:
        row = conn.execute(f'SELECT state FROM "{table}" WHERE originator_id = %s', (model.id,)).fetchone()
    assert row is not None
    topic = f"events.renamed_{uuid.uuid4().hex[:8]}:ProjectMade"  # a class this release lacks
    position = store_raw(system, topic, bytes(row[0]))
    catch_up(projector(system))
    relay = build_relay(system)
    try:
        while relay.run_once():
            pass
    finally:
        relay.close()
    assert {k for k, r in failure_rows(system).items() if r["state"] == PARKED} == {
        (tracking_name(1), position),
        (RELAY, position),
    }

    register_topic(topic, Project.ProjectCreated)  # the class is deployed
    result = CliRunner().invoke(cli, ["projections", "retry", str(position)], env=cli_env(system))
    assert result.exit_code == 0, result.output
    assert {k: r["state"] for k, r in failure_rows(system).items()} == {
        (tracking_name(1), position): RETRIED,
        (RELAY, position): RETRIED,  # published now, acknowledged by the broker
    }
    with system.engine.connect() as conn:
        names = conn.execute(select(t.projects.c.name).where(t.projects.c.owner_id == owner)).scalars().all()
    assert names == ["moved", "moved"], "the retried event's project is in the read model"
