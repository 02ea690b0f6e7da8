"""Scaling out on one database and one broker (issue 11): two relays with one elected,
a standby taking over from a ``kill -9``; processor heartbeats in ``aiorch processors
list`` and ``/health/ready``; two API processes that share nothing but PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from kafka import KafkaConsumer
from sqlalchemy import text
from typer.testing import CliRunner

from commands.context import Actor, Context
from commands.messages import CreateProject, SubmitJob
from infra.cli import app as cli
from infra.kafka import events_topic
from infra.membership import ProcessorRoster
from infra.roles import create_user
from tests.conftest import REPO, Client, Runner, wait_until

HEARTBEAT_S = 0.5


@pytest.fixture
def settings(settings: Any) -> Any:
    """The shared test settings with fast heartbeats: a processor is dead 1.5 s after its last."""
    return settings.model_copy(update={"heartbeat_s": HEARTBEAT_S})


def role_env(settings: Any) -> dict[str, str]:
    """The environment of a role started as its own process on the test's system."""
    s = settings
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AIORCH_DATABASE_URL": s.database_url,
        "AIORCH_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
        "AIORCH_DATA_DIR": str(s.data_dir),
        "AIORCH_MODEL_DIR": str(s.resolved_model_dir),
        "AIORCH_TOPIC_PREFIX": s.topic_prefix,
        "AIORCH_CONSUMER_GROUP": s.consumer_group,
        "AIORCH_SECRET_KEY": s.secret_key,
        "AIORCH_POLL_INTERVAL_S": str(s.poll_interval_s),
        "AIORCH_REQUEUE_AFTER_S": str(s.requeue_after_s),
        "AIORCH_RECONCILE_INTERVAL_S": str(s.reconcile_interval_s),
        "AIORCH_HEARTBEAT_S": str(s.heartbeat_s),
    }


class Role:
    """``python -m infra.cli ARGS`` as a child process, its log in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "infra.cli", *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def said(self, words: str) -> bool:
        return words in self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def editor_project(system: Any) -> tuple[Context, uuid.UUID]:
    user_id = create_user(system, f"ed{uuid.uuid4().hex[:6]}", "editor-password", "editor")
    ctx = Context(Actor(user_id, "ed", "editor"), "test")
    project_id, _ = system.platform.create_project(CreateProject("p"), ctx)
    return ctx, project_id


def relay_position(system: Any) -> int:
    with system.engine.connect() as conn:
        if not conn.execute(text("SELECT to_regclass('relay_tracking') IS NOT NULL")).scalar():
            return 0
        return int(conn.execute(text("SELECT coalesce(max(position), 0) FROM relay_tracking")).scalar() or 0)


def envelope_positions(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[int]:
    """The ``position`` of every envelope on ``topic`` (read until ``expected`` distinct ones
    arrived, then 1.5 s of silence)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1500,
        fetch_max_wait_ms=10,
        value_deserializer=lambda v: json.loads(v),
    )
    out: list[int] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            out.extend(int(r.value["position"]) for r in consumer)
            if len(set(out)) >= expected:
                out.extend(int(r.value["position"]) for r in consumer)  # and whatever trails
                break
    finally:
        consumer.close()
    return out


def test_two_relays_one_publishes_and_the_standby_takes_over_from_kill_9(system: Any, settings: Any, tmp_path: Path) -> None:
    ctx, project_id = editor_project(system)
    env = role_env(settings)
    relays = [Role(["relay"], env, tmp_path / f"relay-{i}.log") for i in range(2)]
    stop_load = threading.Event()
    submitted: list[Any] = []

    def load() -> None:  # a steady stream of submissions through the platform
        while not stop_load.is_set():
            submitted.append(system.platform.submit_job(SubmitJob(project_id, "tts", {"text": f"load {len(submitted)}"}), ctx))
            stop_load.wait(0.02)

    loader = threading.Thread(target=load, name="load", daemon=True)
    try:
        leaders = wait_until(lambda: [r for r in relays if r.said("leading relay")], 60, 0.1, "one relay to take the leadership")
        assert len(leaders) == 1
        active, standby = leaders[0], next(r for r in relays if r is not leaders[0])
        loader.start()
        wait_until(lambda: len(submitted) >= 60 and relay_position(system) > 0, 60, 0.1, "the active relay to publish")
        assert not standby.said("leading relay"), "the standby published while the active relay lived"
        before_kill = relay_position(system)
        killed_at = time.monotonic()
        active.kill()
        wait_until(lambda: standby.said("leading relay"), 30, 0.02, "the standby to take the leadership")
        led_at = time.monotonic()
        wait_until(lambda: relay_position(system) > before_kill, 30, 0.02, "the standby to publish")
        published_at = time.monotonic()
        time.sleep(1.0)  # let the load go on under the new leader (behaviour, not a wait for it)
        stop_load.set()
        loader.join(10)
        head = system.platform.head()
        wait_until(lambda: relay_position(system) >= head, 60, 0.1, "the standby to publish everything")

        stored = [n.id for n in system.platform.recorder.select_notifications(0, 100_000)]
        positions = envelope_positions(settings.kafka_bootstrap_servers, events_topic(settings.topic_prefix), len(stored))
        assert sorted(set(positions)) == stored, "every stored event reaches Kafka"
        duplicated = sorted({p for p in positions if positions.count(p) > 1})
        duplicates = len(positions) - len(set(positions))
        print(
            f"\nrelay takeover after kill -9: leadership in {led_at - killed_at:.2f} s, first publish in "
            f"{published_at - killed_at:.2f} s; {len(stored)} events, {duplicates} duplicate(s) on Kafka "
            f"(positions {duplicated[:10]}), tracked position at the kill {before_kill}"
        )
        assert all(p > before_kill for p in duplicated), "only the batch in flight at the kill is published twice"
        assert duplicates <= 500, "duplicates are bounded by the relay's batch"
    finally:
        stop_load.set()
        for r in relays:
            r.stop()


def test_processor_heartbeats_listed_aged_out_after_kill_9_and_unserved_work_in_readiness(
    system: Any, runner: Runner, settings: Any, engines: dict[str, Any], tmp_path: Path
) -> None:
    from infra.roles import processor

    runner.projector()
    runner.relay()
    stt = processor(system, ["stt"], processor_id_=f"inproc-stt-{uuid.uuid4().hex[:4]}")
    stt.engines, stt.close_engines = {"stt": engines["stt"]}, False
    runner.start(stt, "processor-stt")
    base = runner.api()
    create_user(system, "editor", "editor-password", "editor")
    editor = Client(base, "editor", "editor-password")
    project = editor.post("/api/projects/", json={"name": "membership"}).json()["id"]
    roster = ProcessorRoster(system.engine)
    cli_env = {k: v for k, v in role_env(settings).items() if k.startswith("AIORCH_")}

    tts = Role(["process", "--types", "tts"], role_env(settings), tmp_path / "processor-tts.log")
    try:
        live = wait_until(lambda: (m := roster.members()) and len(m) == 2 and m, 90, 0.2, "both processors to send heartbeats")
        by_types = {tuple(m["types"]): m for m in live}
        assert set(by_types) == {("stt",), ("tts",)}
        assert by_types[("stt",)]["id"] == stt.processor_id and by_types[("tts",)]["pid"] == tts.proc.pid
        tts_id = by_types[("tts",)]["id"]

        listed = CliRunner().invoke(cli, ["processors", "list", "--json"], env=cli_env)
        assert listed.exit_code == 0, listed.output
        rows = {r["id"]: r for r in json.loads(listed.stdout)}
        assert set(rows) == {stt.processor_id, tts_id} and rows[tts_id]["types"] == ["tts"] and rows[tts_id]["live"]
        ready = httpx.get(f"{base}/health/ready").json()
        assert ready["status"] == "ok", ready
        assert {m["id"] for m in ready["checks"]["processors"]["live"]} == {stt.processor_id, tts_id}
        assert ready["checks"]["processors"]["unserved"] == []

        busy = " ".join(f"Sentence {i} keeps the second processor busy for a while." for i in range(25))
        job = editor.post("/api/jobs/", json={"project": project, "type": "tts", "parameters": {"text": busy}}).json()["id"]
        wait_until(lambda: any(m["current_job"] == job for m in roster.members()), 60, 0.1, "the tts processor to report its job")
        table = CliRunner().invoke(cli, ["processors", "list"], env=cli_env)
        assert table.exit_code == 0, table.output
        assert tts_id in table.stdout and job in table.stdout and "tts" in table.stdout
        print(f"\n{table.stdout}")

        tts.kill()
        wait_until(lambda: tts_id not in {m["id"] for m in roster.members()}, 15, 0.1, "the killed processor to age out")
        listed = CliRunner().invoke(cli, ["processors", "list", "--json"], env=cli_env)
        assert [r["id"] for r in json.loads(listed.stdout)] == [stt.processor_id]
        everyone = CliRunner().invoke(cli, ["processors", "list", "--json", "--all"], env=cli_env)
        dead = {r["id"]: r for r in json.loads(everyone.stdout)}[tts_id]
        assert not dead["live"] and dead["current_job"] == job

        queued = editor.post("/api/jobs/", json={"project": project, "type": "tts", "parameters": {"text": "Nobody serves me."}})
        assert queued.status_code == 201, queued.text
        ready = httpx.get(f"{base}/health/ready").json()
        assert ready["status"] == "degraded" and ready["checks"]["processors"]["unserved"] == ["tts"], ready
        assert [m["id"] for m in ready["checks"]["processors"]["live"]] == [stt.processor_id]
    finally:
        tts.kill()
    runner.stop(stt)
    assert stt.processor_id not in {m["id"] for m in roster.members(include_dead=True)}, "a clean stop deletes the row"


def test_two_api_processes_share_nothing_but_the_database(system: Any, runner: Runner, settings: Any) -> None:
    from infra.bootstrap import bootstrap

    runner.projector()
    base_a = runner.api()
    system_b = bootstrap(settings)  # its own pools, platform, hub and read waiter
    runner_b = Runner(system_b, {})
    try:
        base_b = runner_b.api()
        create_user(system, "admin", "admin-password", "admin")  # the store-wide feed is the admins'
        a, b = httpx.Client(base_url=base_a, timeout=30), httpx.Client(base_url=base_b, timeout=30)
        pair = a.post("/api/token/", json={"username": "admin", "password": "admin-password"}).json()
        auth = {"Authorization": f"Bearer {pair['access']}"}
        assert b.get("/api/projects/", headers=auth).status_code == 200, "a token issued by A works on B"

        # read your writes: written on A, read on B with the position A answered
        created = a.post("/api/projects/", json={"name": "on A"}, headers=auth)
        assert created.status_code == 201, created.text
        position = int(created.headers["Aiorch-Position"])
        read = b.get(f"/api/projects/{created.json()['id']}/", params={"min_position": position}, headers=auth)
        assert read.status_code == 200 and read.json()["name"] == "on A", read.text
        assert b.get("/api/projects/", params={"min_position": position + 1000}, headers=auth).status_code == 409

        # a ticket issued by A opens a WebSocket on B, whose hub follows the store: it gets
        # what A writes (``after`` replays from A's position, whatever the connection's timing)
        ticket = a.post("/api/ws-ticket/", headers=auth).json()["ticket"]

        async def feed() -> tuple[str, dict[str, Any]]:
            url = base_b.replace("http://", "ws://") + f"/ws/events/?ticket={ticket}&after={position}"
            async with websockets.connect(url) as ws:
                pushed = await asyncio.to_thread(a.post, "/api/projects/", json={"name": "pushed from A"}, headers=auth)
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 15))
                    if message.get("type") == "event":
                        return str(pushed.json()["id"]), dict(message)

        pushed_id, message = asyncio.run(feed())
        assert message["event_type"] == "ProjectCreated" and message["aggregate_id"] == pushed_id, message

        # a refresh rotated on B is spent on A too
        rotated = b.post("/api/token/refresh/", json={"refresh": pair["refresh"]})
        assert rotated.status_code == 200, rotated.text
        assert a.post("/api/token/refresh/", json={"refresh": pair["refresh"]}).status_code == 401

        # a logout on A is refused by B as soon as it answered
        fresh = rotated.json()
        fresh_auth = {"Authorization": f"Bearer {fresh['access']}"}
        assert b.get("/api/projects/", headers=fresh_auth).status_code == 200
        assert a.post("/api/token/logout/", json={"refresh": fresh["refresh"]}).status_code == 204
        assert b.get("/api/projects/", headers=fresh_auth).status_code == 401
        assert b.post("/api/token/refresh/", json={"refresh": fresh["refresh"]}).status_code == 401
    finally:
        runner_b.close()
        system_b.close()


def test_roles_started_together_on_a_new_database_all_come_up(settings: Any) -> None:
    """Every role runs the schema step and creates its tables at start: started at the same
    moment on an empty database (docker compose up, a multi-host start), none fails."""
    from infra.bootstrap import bootstrap

    gate = threading.Barrier(6)
    errors: list[BaseException] = []
    systems: list[Any] = []

    def start() -> None:
        gate.wait(10)
        try:
            systems.append(bootstrap(settings))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    for s in systems:
        s.close()
    assert not errors, errors
    assert len(systems) == 6
