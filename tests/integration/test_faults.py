"""Fault injection against real PostgreSQL and a real Kafka-protocol broker: retries with
backoff and dead letters, crashed processors, graceful shutdown, random cancellations."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from typing import Any

from kafka import KafkaConsumer

from commands.context import Actor, Context
from commands.messages import CreateProject, SubmitJob
from infra.kafka import dead_letter_topic
from infra.roles import create_user
from tests.conftest import REPO, Client, wait_until

LONG_TEXT = " ".join(f"Sentence {i} keeps the speech engine busy for a little while longer." for i in range(40))


def events_of(system: Any, job_id: Any) -> list[tuple[int, str, Any]]:
    return [(p, type(e).__name__, e) for p, e in system.platform.history(job_id, limit=100_000)]


def editor(system: Any) -> tuple[Context, uuid.UUID]:
    user_id = create_user(system, f"ed{uuid.uuid4().hex[:6]}", "editor-password", "editor")
    ctx = Context(Actor(user_id, "editor", "editor"), "faults")
    return ctx, system.platform.create_project(CreateProject("faults"), ctx)[0]


def test_retryable_failures_back_off_then_dead_letter(system: Any, runner: Any, settings: Any) -> None:
    settings.max_attempts["tts"] = 3
    settings.max_run_s["tts"] = 0.6  # every attempt of a long text times out: a real, retryable fault
    settings.retry_backoff_s, settings.retry_backoff_cap_s = 1.0, 10.0
    ctx, project = editor(system)
    runner.projector()
    runner.relay()
    runner.processor()
    base = runner.api()
    admin_id = create_user(system, "admin", "admin-password", "admin")
    job_id, _ = system.platform.submit_job(SubmitJob(project, "tts", {"text": LONG_TEXT}), ctx)
    wait_until(lambda: system.platform.get_job(job_id).status == "failed", 60, 0.2, "the job to fail for good")
    history = events_of(system, job_id)
    kinds = [k for _, k, _ in history]
    assert kinds.count("JobStarted") == 3 and kinds.count("JobRetried") == 2
    assert kinds[-2:] == ["JobFailed", "JobDeadLettered"]
    retried = [e for _, k, e in history if k == "JobRetried"]
    assert [e.attempt for e in retried] == [2, 3] and all(e.reason.startswith("timed_out") for e in retried)
    failed = next(e for _, k, e in history if k == "JobFailed")
    assert failed.code == "timed_out"
    started = [e for _, k, e in history if k == "JobStarted"]
    for n, (retry, start) in enumerate(zip(retried, started[1:], strict=True), start=1):
        wait = (start.timestamp - retry.timestamp).total_seconds()
        low, high = 0.5 * 2 ** (n - 1), 1.0 * 2 ** (n - 1)  # equal jitter: [d/2, d], d = 1 s × 2^(n−1)
        assert low - 0.05 <= wait <= high + 2.0, (n, wait)
        assert datetime.fromisoformat(retry.not_before) <= start.timestamp
    # the dead letter is listed, published, and re-driven
    admin = Client(base, "admin", "admin-password")
    wait_until(lambda: admin.get("/api/dead-letters/").json()["count"] == 1, 10)
    letter = admin.get("/api/dead-letters/").json()["results"][0]
    assert letter["job"] == str(job_id) and letter["attempts"] == 3 and letter["code"] == "timed_out"
    consumer = KafkaConsumer(
        dead_letter_topic(settings.topic_prefix),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    letters = [json.loads(r.value) for r in consumer]
    consumer.close()
    assert [m["job_id"] for m in letters] == [str(job_id)] and letters[0]["attempts"] == 3
    settings.max_run_s["tts"] = 3600.0
    assert admin.post(f"/api/dead-letters/{job_id}/redrive/").status_code == 202
    wait_until(lambda: system.platform.get_job(job_id).status == "completed", 120, 0.5, "the re-driven job to complete")
    assert system.platform.get_job(job_id).attempt == 4
    assert admin.get("/api/dead-letters/").json()["count"] == 0
    assert admin_id


def test_cancels_at_random_moments_end_consistently(system: Any, runner: Any) -> None:
    ctx, project = editor(system)
    runner.projector()
    runner.relay()
    runner.processor()
    base = runner.api()
    client = Client(base, system.platform.repository.get(uuid.UUID(ctx.actor.id)).username, "editor-password")
    rng = random.Random(11)
    answers: dict[str, str] = {}
    jobs = [
        client.post(
            "/api/jobs/",
            json={
                "project": str(project),
                "type": "tts",
                "parameters": {"text": f"Job {i}. " + "More words here. " * rng.randint(1, 4)},
            },
        ).json()["id"]
        for i in range(100)
    ]
    for job_id in jobs:
        time.sleep(rng.uniform(0, 0.05))
        resp = client.post(f"/api/jobs/{job_id}/cancel/")
        if resp.status_code == 409:  # it failed or was cancelled already: not expected here
            answers[job_id] = "conflict"
        else:
            assert resp.status_code == 202
            answers[job_id] = resp.json()["status"]

    def settled() -> bool:
        return all(system.platform.get_job(uuid.UUID(j)).status in ("completed", "cancelled") for j in jobs)

    wait_until(settled, 120, 0.5, "every job to end")
    counts = {"cancelled": 0, "cancel_requested": 0, "completed": 0}
    for job_id, answer in answers.items():
        final = system.platform.get_job(uuid.UUID(job_id))
        kinds = [k for _, k, _ in events_of(system, uuid.UUID(job_id))]
        counts[answer] += 1
        if answer == "cancelled":
            assert final.status == "cancelled" and "JobStarted" not in kinds
        elif answer == "completed":
            assert final.status == "completed" and "JobCancelRequested" not in kinds
        else:  # cancel_requested: stopped at a checkpoint, or it finished first and stays completed
            assert answer == "cancel_requested"
            assert final.status in ("cancelled", "completed")
        assert kinds.count("JobCompleted") + kinds.count("JobCancelled") == 1
    assert counts["cancelled"] > 0, counts
    print("cancel outcomes:", counts)


def running_with_progress(system: Any, job_id: Any) -> Any:
    """The job if it runs and has reported progress, else None."""
    job = system.platform.get_job(job_id)
    return job if job.status == "running" and job.progress > 0 else None


def _process(settings: Any, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIORCH_")}
    env.update(
        {
            "AIORCH_DATABASE_URL": settings.database_url,
            "AIORCH_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "AIORCH_DATA_DIR": str(settings.data_dir),
            "AIORCH_MODEL_DIR": str(settings.model_dir),
            "AIORCH_TOPIC_PREFIX": settings.topic_prefix,
            "AIORCH_CONSUMER_GROUP": settings.consumer_group,
            "AIORCH_LEASE_S": str(settings.lease_s),
            "AIORCH_HEARTBEAT_S": str(settings.heartbeat_s),
            "AIORCH_REQUEUE_AFTER_S": str(settings.requeue_after_s),
            "AIORCH_SECRET_KEY": "x" * 40,
            **(extra or {}),
        }
    )
    log = open(settings.data_dir / f"processor-{uuid.uuid4().hex[:6]}.log", "wb")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "process", "--types", "tts"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )


def test_kill_9_a_processor_in_the_middle_of_each_of_20_jobs(system: Any, runner: Any, settings: Any) -> None:
    settings.lease_s, settings.heartbeat_s = 3.0, 0.5
    ctx, project = editor(system)
    runner.projector()
    runner.start(__import__("infra.roles", fromlist=["relay"]).relay(system), "relay")
    procs = [_process(settings), _process(settings), _process(settings)]
    jobs: list[Any] = []
    kills = 0
    try:
        for _ in range(20):  # one job at a time: each is caught running and its processor killed
            job_id, _ = system.platform.submit_job(SubmitJob(project, "tts", {"text": LONG_TEXT[:900]}), ctx)
            jobs.append(job_id)
            job = wait_until(lambda j=job_id: running_with_progress(system, j), 120, 0.05, "the job to run")
            pid = int(job.processor_id.split("-")[-2])
            victim = next(p for p in procs if p.pid == pid)
            victim.send_signal(signal.SIGKILL)  # kill -9 in the middle of the job
            victim.wait(10)
            kills += 1
            procs = [p for p in procs if p.poll() is None] + [_process(settings)]
        wait_until(
            lambda: all(system.platform.get_job(j).status == "completed" for j in jobs),
            300,
            1.0,
            "every job to complete after its processor was killed",
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    for job_id in jobs:
        history = events_of(system, job_id)
        kinds = [k for _, k, _ in history]
        assert kinds.count("JobCompleted") == 1
        starts = [e for _, k, e in history if k == "JobStarted"]
        completed_by = history[-1][2].actor["id"]
        assert len(starts) >= 2 and completed_by != starts[0].processor_id, "completed on another processor"
        assert any(k == "JobRetried" and e.reason.startswith("worker_lost") for _, k, e in history)
    with system.engine.connect() as conn:
        from sqlalchemy import text

        results = conn.execute(text("SELECT count(*) FROM rm_job_results")).scalar_one()
    assert results == 20
    print(f"killed {kills} processors mid-job; 20 jobs completed exactly once, each on another processor")


def test_sigterm_hands_the_running_job_back(system: Any, runner: Any, settings: Any) -> None:
    ctx, project = editor(system)
    runner.projector()
    runner.start(__import__("infra.roles", fromlist=["relay"]).relay(system), "relay")
    first = _process(settings)
    job_id, _ = system.platform.submit_job(SubmitJob(project, "tts", {"text": LONG_TEXT}), ctx)
    try:
        wait_until(lambda: system.platform.get_job(job_id).status == "running", 60, 0.1)
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
        job = system.platform.get_job(job_id)
        assert job.status == "pending" and job.attempt == 1
        second = _process(settings)
        wait_until(lambda: system.platform.get_job(job_id).status == "completed", 120, 0.5)
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    finally:
        for p in (first,):
            if p.poll() is None:
                p.kill()
    kinds = [k for _, k, _ in events_of(system, job_id)]
    assert "JobRetried" in kinds and kinds.count("JobCompleted") == 1
