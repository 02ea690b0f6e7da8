"""Delivery under faults: claim races, relay and projector restarts, broker restarts, and
bad input that must store nothing."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from kafka import KafkaConsumer
from sqlalchemy import func, select

from commands.context import Actor, Context
from commands.messages import CreateProject, SubmitJob
from infra.kafka import events_topic
from infra.roles import create_user
from projections import tables as t
from tests.conftest import SHARED_DATA, Client, wait_until


def stored_types(system: Any, aggregate_id: Any = None) -> list[str]:
    """The type names of stored events (of one aggregate, or all), in store order."""
    out, start = [], 0
    while True:
        batch = system.platform.recorder.select_notifications(start, 500, inclusive_of_start=False)
        if not batch:
            return out
        for n in batch:
            if aggregate_id is None or n.originator_id == aggregate_id:
                out.append(n.topic.rsplit(".", 1)[-1])
        start = batch[-1].id


def head(system: Any) -> int:
    return system.platform.recorder.max_notification_id() or 0


def editor_project(system: Any) -> tuple[Context, uuid.UUID]:
    user_id = create_user(system, f"ed{uuid.uuid4().hex[:6]}", "editor-password", "editor")
    ctx = Context(Actor(user_id, "ed", "editor"), "test")
    project_id, _ = system.platform.create_project(CreateProject("p"), ctx)
    return ctx, project_id


def test_two_processors_racing_for_one_job_claim_it_once(system: Any, runner: Any) -> None:
    from infra.roles import processor

    ctx, project_id = editor_project(system)
    job_id, _ = system.platform.submit_job(SubmitJob(project_id, "tts", {"text": "Racing processors."}), ctx)
    job = system.platform.get_job(job_id)
    message = {"job_id": str(job_id), "type": "tts", "version": job.version}
    procs = [processor(system, ["tts"], processor_id_=f"racer-{i}") for i in range(2)]
    for p in procs:
        p.engines = runner.engines
    barrier = threading.Barrier(2)
    outcomes: list[Any] = []

    def race(p: Any) -> None:
        barrier.wait()
        outcomes.append(p.handle(message))

    threads = [threading.Thread(target=race, args=(p,)) for p in procs]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert sorted(outcomes, key=str) == [None, "completed"]  # one ran it, one lost the claim
    types = stored_types(system, job_id)
    assert types.count("JobStarted") == 1
    assert types.count("JobCompleted") == 1
    assert system.platform.get_job(job_id).status == "completed"


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every envelope on ``topic`` (reads until ``expected`` arrived and 1 s of silence)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1500,
        fetch_max_wait_ms=10,
        value_deserializer=lambda v: json.loads(v),
    )
    out: list[dict[str, Any]] = []
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out.extend(r.value for r in consumer)
        if len(out) >= expected:
            break
    consumer.close()
    return out


def test_restarting_relay_and_projector_loses_nothing_and_applies_nothing_twice(system: Any, runner: Any, settings: Any) -> None:
    ctx, project_id = editor_project(system)
    projector, relay = runner.projector(), runner.relay()
    job_ids = []
    for round_ in range(4):
        for i in range(10):
            job_ids.append(system.platform.submit_job(SubmitJob(project_id, "tts", {"text": f"job {round_} {i}"}), ctx)[0])
        # stop both mid-stream, write more while they are down, start new ones
        runner.stop(projector)
        runner.stop(relay)
        for i in range(5):
            job_ids.append(system.platform.submit_job(SubmitJob(project_id, "tts", {"text": f"gap {round_} {i}"}), ctx)[0])
        projector, relay = runner.projector(), runner.relay()
    last = head(system)
    wait_until(lambda: projector.position() >= last and relay.position() >= last, 30, message="catch-up")

    with system.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.jobs)).scalar_one() == len(job_ids)
        jobs_count = conn.execute(select(t.projects.c.jobs_count).where(t.projects.c.id == str(project_id))).scalar_one()
    assert jobs_count == len(job_ids)  # a counter: any event applied twice would show

    envelopes = consume_all(settings.kafka_bootstrap_servers, events_topic(settings.topic_prefix), last)
    positions = [e["position"] for e in envelopes]
    assert sorted(set(positions)) == sorted(n.id for n in system.platform.recorder.select_notifications(0, 10_000))
    assert len(positions) == len(set(positions)), "a graceful restart published an event twice"
    for e in envelopes:
        assert {
            "event_id",
            "type",
            "aggregate_id",
            "version",
            "position",
            "occurred_at",
            "actor",
            "correlation_id",
            "schema_version",
            "data",
        } <= set(e)
        assert "password_hash" not in e["data"]


def test_bad_input_is_refused_with_problem_json_and_stores_nothing(runner: Any, system: Any) -> None:
    runner.projector()
    base = runner.api()
    for role in ("editor", "viewer"):
        create_user(system, role, f"{role}-password", role)
    proj = system.projector()
    wait_until(lambda: proj.position() >= head(system))
    editor, viewer = Client(base, "editor", "editor-password"), Client(base, "viewer", "viewer-password")
    project = editor.post("/api/projects/", json={"name": "p"}).json()["id"]
    before = head(system)
    blobs_before = sorted(p for p in system.blobs.root.rglob("*") if p.is_file())

    cases = [
        (editor, {"json": {"project": project, "type": "teleport", "parameters": {}}}, 422),
        (editor, {"json": {"project": project, "type": "tts", "parameters": {}}}, 422),
        (editor, {"json": {"project": project, "type": "tts", "parameters": {"text": ""}}}, 422),
        (editor, {"json": {"project": project, "type": "tts", "parameters": {"text": "hi", "bogus": 1}}}, 422),
        (editor, {"json": {"project": str(uuid.uuid4()), "type": "tts", "parameters": {"text": "hi"}}}, 422),
        (editor, {"json": {"project": "not-a-uuid", "type": "tts", "parameters": {"text": "hi"}}}, 422),
        (editor, {"json": {"project": project, "type": "stt", "parameters": {}}}, 422),  # no file
        (
            editor,
            {
                "data": {"project": project, "type": "stt"},
                "files": {"input_file": ("notes.wav", b"just some text, not audio at all", "audio/wav")},
            },
            415,
        ),
        (
            editor,
            {
                "data": {"project": project, "type": "stt"},
                "files": {"input_file": ("photo.wav", (SHARED_DATA / "images" / "astronaut.png").read_bytes(), "audio/wav")},
            },
            415,
        ),
        (editor, {"content": b"{broken", "headers": {"Content-Type": "application/json"}}, 422),
        (viewer, {"json": {"project": project, "type": "tts", "parameters": {"text": "hi"}}}, 403),
    ]
    for client, kwargs, status in cases:
        resp = client.post("/api/jobs/", **kwargs)
        assert resp.status_code == status, (kwargs, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
        body = resp.json()
        assert {"type", "title", "status", "detail", "instance"} <= set(body)
        assert body["status"] == status and body["instance"] == resp.headers["X-Request-ID"]
    assert viewer.post("/api/projects/", json={"name": "nope"}).status_code == 403
    anonymous = Client.__new__(Client)
    import httpx

    anonymous.http = httpx.Client(base_url=base)
    assert anonymous.post("/api/jobs/", json={}).status_code == 401
    assert head(system) == before, "a refused command stored an event"
    assert sorted(p for p in system.blobs.root.rglob("*") if p.is_file()) == blobs_before, "a refused upload left a blob"


def test_broker_restarted_empty_with_work_queued_still_runs_every_job(system: Any, runner: Any, broker: Any) -> None:
    if broker.external:
        import pytest

        pytest.skip("needs the embedded broker, which the test can restart")
    ctx, project_id = editor_project(system)
    runner.projector()
    relay = runner.relay()
    job_ids = [system.platform.submit_job(SubmitJob(project_id, "tts", {"text": f"Queued job {i}."}), ctx)[0] for i in range(3)]
    last = head(system)
    wait_until(lambda: relay.position() >= last, 20, message="the relay to publish the work")
    broker.stop()  # the queued work messages vanish with it
    more = [
        system.platform.submit_job(SubmitJob(project_id, "tts", {"text": f"Outage job {i}."}), ctx)[0] for i in range(2)
    ]  # commands still succeed: the store is the record
    broker.start()  # empty: no topics, no offsets
    runner.processor()

    def all_done() -> bool:
        return all(system.platform.get_job(j).status == "completed" for j in job_ids + more)

    wait_until(all_done, 90, 0.5, "every job to complete after the broker restart")
    for j in job_ids + more:
        assert stored_types(system, j).count("JobStarted") == 1


def test_broker_restart_under_a_busy_connected_processor(system: Any, runner: Any, broker: Any) -> None:
    if broker.external:
        import pytest

        pytest.skip("needs the embedded broker, which the test can restart")
    ctx, project_id = editor_project(system)
    runner.projector()
    relay = runner.relay()
    runner.processor()
    busy_text = " ".join(f"Sentence {i} keeps this processor busy for a while." for i in range(25))
    busy = system.platform.submit_job(SubmitJob(project_id, "tts", {"text": busy_text}), ctx)[0]
    wait_until(lambda: system.platform.get_job(busy).status == "running", 30, message="the busy job to start")
    queued = [system.platform.submit_job(SubmitJob(project_id, "tts", {"text": f"Queued behind {i}."}), ctx)[0] for i in range(3)]
    last = head(system)
    wait_until(lambda: relay.position() >= last, 20, message="the relay to publish the queued work")
    broker.stop()
    broker.start()
    jobs = [busy, *queued]
    wait_until(
        lambda: all(system.platform.get_job(j).status == "completed" for j in jobs),
        120,
        0.5,
        "every job to complete after the broker restart",
    )
    for j in jobs:
        assert stored_types(system, j).count("JobStarted") == 1


def test_idle_processors_claim_new_work_from_the_store_and_once(system: Any, runner: Any) -> None:
    """No relay (Kafka carries no work) and no stale-work claims: two idle processors still
    hear of each job submitted while they idle from the read models' NOTIFY, and each job
    starts once."""
    system.settings = system.settings.model_copy(update={"requeue_after_s": 3600.0})
    runner.projector()
    runner.processor("store-a")
    runner.processor("store-b")
    ctx, project_id = editor_project(system)
    for i in range(3):
        job_id, _ = system.platform.submit_job(SubmitJob(project_id, "tts", {"text": f"Heard from the store {i}."}), ctx)
        wait_until(lambda j=job_id: system.platform.get_job(j).status == "completed", 60, message=f"job {job_id} to complete")
        assert stored_types(system, job_id).count("JobStarted") == 1
