"""Audit replay on real services: history, ``as_of`` time travel, the SSE/JSON feed, the
command audit log, health and metrics."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from commands.context import Actor, Context
from commands.messages import CompleteJob, StartJob, UpdateProgress
from projections.history import StoreHistory
from tests.conftest import wait_until

PROC = Context(Actor("proc-h", None, "processor"), "run-h")


def store_history(system: Any) -> StoreHistory:
    """The read side's reader of ``system``'s event store."""
    return StoreHistory.of_store(system.engine, system.platform.recorder, system.platform.mapper)


def run_job_through(system: Any, job_id: str, steps: int = 5) -> None:
    """Claim, report progress and complete a job through commands, as a processor does."""
    jid = uuid.UUID(job_id)
    system.platform.start_job(StartJob(jid, system.platform.get_job(jid).version, "proc-h"), PROC)
    for i in range(1, steps + 1):
        system.platform.update_progress(
            UpdateProgress(
                jid, i * 15, f"stage-{i % 2}", [{"at": "2026-01-01T00:00:00+00:00", "level": "info", "message": f"line {i}"}]
            ),
            PROC,
        )
    system.platform.complete_job(CompleteJob(jid, {"files": [], "meta": {"ok": True}}), PROC)


def test_history_and_as_of_at_every_position(platform_up: dict[str, Any], system: Any) -> None:
    editor = platform_up["clients"]["editor"]
    runner = platform_up["runner"]
    for role, _thread in list(runner.threads):  # no processor: this test drives the job itself
        if type(role).__name__ == "Processor":
            runner.stop(role)
    job = editor.post("/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {"text": "x"}}).json()
    run_job_through(system, job["id"])
    history = editor.get(f"/api/jobs/{job['id']}/history/", params={"page_size": 500}).json()
    items = history["results"]
    assert history["count"] == len(items) == 13  # submitted, started, 5 × (progressed + logs), completed
    assert [i["type"] for i in items][:2] == ["JobSubmitted", "JobStarted"] and items[-1]["type"] == "JobCompleted"
    assert [i["version"] for i in items] == list(range(1, 14))
    positions = [i["position"] for i in items]
    assert positions == sorted(positions)
    assert items[0]["actor"]["username"] == "editor" and items[1]["actor"]["role"] == "processor"
    assert items[0]["correlation_id"] and items[1]["correlation_id"] == "run-h"
    after = editor.get(f"/api/jobs/{job['id']}/history/", params={"after": positions[3]}).json()
    assert [i["position"] for i in after["results"]] == positions[4:]

    # as_of at each position equals the fold of the events up to there
    for n, item in enumerate(items, start=1):
        past = editor.get(f"/api/jobs/{job['id']}/", params={"as_of": item["position"]}).json()
        folded = store_history(system).job_at(uuid.UUID(job["id"]), n).as_dict()
        assert past["status"] == folded["status"] and past["progress"] == folded["progress"], n
        assert past["stage"] == folded["stage"] and past["attempt"] == folded["attempt"], n
        by_time = editor.get(f"/api/jobs/{job['id']}/", params={"as_of": item["occurred_at"]}).json()
        assert by_time == past, n
    assert editor.get(f"/api/jobs/{job['id']}/", params={"as_of": positions[0] - 1}).status_code == 404
    assert editor.get(f"/api/jobs/{job['id']}/", params={"as_of": "yesterday"}).status_code == 422
    now = editor.get(f"/api/jobs/{job['id']}/", params={"min_position": positions[-1]}).json()
    latest = editor.get(f"/api/jobs/{job['id']}/", params={"as_of": positions[-1]}).json()
    assert {k: latest[k] for k in ("status", "progress", "stage", "attempt", "has_result", "error")} == {
        k: now[k] for k in ("status", "progress", "stage", "attempt", "has_result", "error")
    }


def test_sse_feed_resumes_and_closes_after_the_last_event(platform_up: dict[str, Any], system: Any) -> None:
    editor = platform_up["clients"]["editor"]
    text = "One sentence. Another sentence. A third one to make some progress."
    job = editor.post("/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {"text": text}}).json()
    editor.wait_job(job["id"])
    headers = {k.lower(): v for k, v in editor.http.headers.items()} | {"accept": "text/event-stream"}
    with httpx.stream("GET", f"{platform_up['base']}/api/jobs/{job['id']}/events/", headers=headers, timeout=30) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        body = "".join(resp.iter_text())  # returns because the stream closes after JobCompleted
    frames = [f for f in body.strip().split("\n\n") if f.startswith("id:")]
    ids = [int(f.split("\n")[0][4:]) for f in frames]
    assert ids == sorted(ids) and len(ids) >= 3
    last = json.loads(frames[-1].split("data: ", 1)[1])
    assert last["type"] == "JobCompleted"
    headers["last-event-id"] = str(ids[1])
    with httpx.stream("GET", f"{platform_up['base']}/api/jobs/{job['id']}/events/", headers=headers, timeout=30) as resp:
        resumed = [f for f in "".join(resp.iter_text()).strip().split("\n\n") if f.startswith("id:")]
    assert [int(f.split("\n")[0][4:]) for f in resumed] == ids[2:]
    pages = editor.get(f"/api/jobs/{job['id']}/events/", params={"after": ids[0]}).json()
    assert [r["position"] for r in pages["results"]] == ids[1:]


def test_audit_log_records_every_command_attempt(platform_up: dict[str, Any]) -> None:
    admin, editor, viewer = (platform_up["clients"][r] for r in ("admin", "editor", "viewer"))
    editor.post("/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {"text": "ok"}})
    editor.post("/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {}})
    viewer.post("/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {"text": "no"}})
    rows = admin.get("/api/audit/", params={"command": "SubmitJob", "page_size": 50}).json()["results"]
    outcomes = {(r["actor"]["username"], r["outcome"], r["status"]) for r in rows}
    assert {("editor", "ok", 201), ("editor", "invalid", 422), ("viewer", "refused", 403)} <= outcomes
    refused = admin.get("/api/audit/", params={"outcome": "refused", "actor": "viewer"}).json()["results"]
    assert refused and all(r["outcome"] == "refused" and r["actor"]["username"] == "viewer" for r in refused)
    assert all(r["request_id"] for r in rows)
    assert editor.get("/api/audit/").status_code == 403


def test_ready_stays_up_with_the_broker_down_and_metrics_count(platform_up: dict[str, Any], broker: Any) -> None:
    base = platform_up["base"]
    ready = httpx.get(f"{base}/health/ready").json()
    assert ready["status"] == "ok" and ready["checks"]["database"] == "ok" and ready["checks"]["broker"] == "ok"
    metrics = httpx.get(f"{base}/metrics").text
    assert "aiorch_store_position" in metrics and 'aiorch_commands_total{command="ObtainToken",outcome="ok"}' in metrics
    if broker.external:
        return
    broker.stop()
    try:

        def degraded() -> Any:
            resp = httpx.get(f"{base}/health/ready")
            return resp.status_code == 200 and resp.json()["status"] == "degraded" and resp.json()["checks"]["broker"] != "ok"

        wait_until(degraded, 15, 0.5, "ready to report the broker down")
        editor = platform_up["clients"]["editor"]
        resp = editor.post(
            "/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {"text": "outage"}}
        )
        assert resp.status_code == 201  # commands still succeed: the store is the record
    finally:
        broker.start()
