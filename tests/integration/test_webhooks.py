"""Webhooks on a real PostgreSQL with a real HTTP receiver on loopback: signed per Standard
Webhooks (verified with the ``standardwebhooks`` library), the job as of each event, and
the outbound-address guard at creation."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from commands.context import Actor, Context
from commands.messages import CompleteJob, CreateProject, StartJob, SubmitJob, UpdateProgress
from tests.conftest import Client, Runner, wait_until


class Receiver:
    """A threaded HTTP server on loopback that records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks(settings: Any) -> Iterator[dict[str, Any]]:
    """Projector, API and dispatcher in threads (private addresses allowed), a receiver,
    and an editor with a project."""
    from infra.bootstrap import bootstrap
    from infra.dispatcher import build_dispatcher
    from infra.roles import create_user

    s = settings.model_copy(update={"webhook_allow_private": True, "webhook_schedule_s": [0, 0.3, 0.3, 1.5, 0.5, 0.5]})
    system = bootstrap(s)
    runner = Runner(system, {})
    receiver = Receiver()
    try:
        runner.projector()
        base = runner.api()
        editor_id = create_user(system, "editor", "editor-password", "editor")
        create_user(system, "admin", "admin-password", "admin")
        dispatcher = runner.start(build_dispatcher(system), "dispatcher")
        editor = Context(Actor(id=editor_id, username="editor", role="editor"), "test")
        project_id, _ = system.platform.create_project(CreateProject("Hooks"), editor)
        yield {
            "system": system,
            "receiver": receiver,
            "editor": editor,
            "project": project_id,
            "client": Client(base, "editor", "editor-password"),
            "admin": Client(base, "admin", "admin-password"),
            "dispatcher": dispatcher,
        }
    finally:
        runner.close()
        receiver.close()
        system.close()


def _run_job(h: dict[str, Any], **submit: Any) -> tuple[str, list[int]]:
    """Submit, start, progress and complete a tts job; returns its id and event positions."""
    platform = h["system"].platform
    job_id, p0 = platform.submit_job(SubmitJob(h["project"], "tts", {"text": "Hello."}, **submit), h["editor"])
    proc = Context(Actor(id="proc-1", username=None, role="processor"), "run-1")
    p1 = platform.start_job(StartJob(job_id, 1, "proc-1"), proc)
    p2 = platform.update_progress(UpdateProgress(job_id, 40, "synthesis"), proc)
    p3 = platform.complete_job(CompleteJob(job_id, {"files": [], "meta": {}}), proc)
    return str(job_id), [p0, p1, p2, p3]


def test_job_events_arrive_signed_with_the_job_as_of_each_event(hooks: dict[str, Any]) -> None:
    receiver, client = hooks["receiver"], hooks["client"]
    resp = client.post(
        "/api/webhooks/",
        json={"url": receiver.url + "/hook", "events": ["job.started", "job.progress", "job.completed"], "description": "mine"},
    )
    assert resp.status_code == 201, resp.text
    endpoint = resp.json()
    assert endpoint["secret"].startswith("whsec_")
    assert {"id", "url", "events", "description", "enabled", "disabled_reason", "created_at", "updated_at"} <= set(endpoint)
    assert "secret" not in client.get(f"/api/webhooks/{endpoint['id']}/").json()
    default = client.get("/api/webhooks/default/secret/").json()["secret"]
    assert default == client.get("/api/webhooks/default/secret/").json()["secret"]

    job_id, positions = _run_job(hooks, webhook=receiver.url + "/per-job", webhook_events=["job.completed"])
    wait_until(lambda: len(receiver.requests) >= 4, 30, message="four deliveries")
    by_path: dict[str, list[dict[str, Any]]] = {}
    for req in receiver.requests:
        secret = default if req["path"] == "/per-job" else endpoint["secret"]
        payload = Webhook(secret).verify(req["body"], req["headers"])
        by_path.setdefault(req["path"], []).append(payload)
    hook = sorted(by_path["/hook"], key=lambda p: p["data"]["position"])
    assert [p["type"] for p in hook] == ["job.started", "job.progress", "job.completed"]
    assert [p["data"]["position"] for p in hook] == positions[1:]
    assert [(p["data"]["job"]["status"], p["data"]["job"]["progress"]) for p in hook] == [
        ("running", 0),
        ("running", 40),
        ("completed", 100),
    ]
    assert all(p["data"]["job"]["id"] == job_id for p in hook)
    assert [p["type"] for p in by_path["/per-job"]] == ["job.completed"]

    log = client.get(f"/api/webhooks/{endpoint['id']}/deliveries/").json()
    assert log["count"] == 3
    assert all(d["status"] == "succeeded" and len(d["attempts"]) == 1 for d in log["results"])
    assert log["results"][0]["attempts"][0]["status_code"] == 200


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "169.254.169.254"])
def test_private_and_metadata_urls_are_refused_unless_allowed(hooks: dict[str, Any], address: str) -> None:
    platform = hooks["system"].platform
    platform.policies = dataclasses.replace(platform.policies, webhook_allow_private=False)
    try:
        resp = hooks["client"].post("/api/webhooks/", json={"url": f"http://{address}/hook", "events": ["*"]})
        assert resp.status_code == 422, resp.text
        assert resp.json()["errors"][0]["loc"] == ["body", "url"]
    finally:
        platform.policies = dataclasses.replace(platform.policies, webhook_allow_private=True)
    allowed = hooks["client"].post("/api/webhooks/", json={"url": f"http://{address}/hook", "events": ["*"]})
    assert allowed.status_code == (422 if address == "169.254.169.254" else 201), allowed.text


def test_rotation_signs_with_both_secrets_during_the_overlap(hooks: dict[str, Any]) -> None:
    receiver, client = hooks["receiver"], hooks["client"]
    endpoint = client.post("/api/webhooks/", json={"url": receiver.url + "/r", "events": ["webhook.test"]}).json()
    rotated = client.post(f"/api/webhooks/{endpoint['id']}/rotate-secret/")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert client.post(f"/api/webhooks/{endpoint['id']}/test/").status_code == 202
    wait_until(lambda: receiver.requests, 30, message="the test ping")
    req = receiver.requests[0]
    assert len(req["headers"]["webhook-signature"].split(" ")) == 2
    for secret in (endpoint["secret"], new):
        assert Webhook(secret).verify(req["body"], req["headers"])["type"] == "webhook.test"
    assert json.loads(req["body"])["data"]["job"] is None
    other = "whsec_" + uuid.uuid4().hex
    with pytest.raises(Exception, match="signature"):
        Webhook(other).verify(req["body"], req["headers"])


def test_refused_three_times_then_503_retry_after_then_200_is_one_delivery_of_five_attempts(
    hooks: dict[str, Any], settings: Any
) -> None:
    from datetime import datetime

    from infra.embedded import free_port
    from projections import webhooks as w

    system, client = hooks["system"], hooks["client"]
    port = free_port()  # nobody listens yet: connection refused
    endpoint = client.post("/api/webhooks/", json={"url": f"http://127.0.0.1:{port}/late", "events": ["job.started"]}).json()
    _run_job(hooks)

    def attempts() -> list[dict[str, Any]]:
        with system.engine.connect() as conn:
            rows = conn.execute(w.deliveries.select().where(w.deliveries.c.endpoint_id == endpoint["id"])).mappings().all()
        return list(rows[0]["attempts"]) if rows else []

    wait_until(lambda: len(attempts()) >= 3, 30, message="three refused attempts")
    plan = iter([503, 200])
    seen: list[dict[str, Any]] = []

    class Late(ThreadingHTTPServer):
        pass

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
            seen.append({"headers": dict(self.headers), "body": body})
            code = next(plan, 200)
            self.send_response(code)
            if code == 503:
                self.send_header("retry-after", "1")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = Late(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        wait_until(lambda: len(attempts()) >= 5 and attempts()[-1]["status_code"] == 200, 30, message="the fifth attempt")
    finally:
        server.shutdown()
        server.server_close()
    log = client.get(f"/api/webhooks/{endpoint['id']}/deliveries/").json()
    assert log["count"] == 1
    delivery = log["results"][0]
    assert delivery["status"] == "succeeded"
    got = delivery["attempts"]
    assert [a["status_code"] for a in got] == [None, None, None, 503, 200]
    assert all(a["error"] for a in got[:4])
    assert len({r["headers"]["webhook-id"] for r in seen}) == 1 and seen[0]["headers"]["webhook-id"] == delivery["id"]
    for r in seen:
        Webhook(endpoint["secret"]).verify(r["body"], r["headers"])
    at = [datetime.fromisoformat(a["at"]) for a in got]
    waits = [(b - a).total_seconds() for a, b in itertools.pairwise(at)]
    assert all(0.3 * 0.8 <= x <= 10 for x in waits[:2]), waits  # schedule 0.3 s ± 20 %
    assert waits[3] >= 1.0, waits  # not before Retry-After: 1


def test_rebinding_and_redirects_are_not_followed(hooks: dict[str, Any]) -> None:
    from infra.dispatcher import Sender

    receiver = hooks["receiver"]
    target = Receiver()
    try:
        strict = Sender(allow_private=False, timeout_s=5, resolver=lambda host, port: ["127.0.0.1"])
        refused = strict.send(
            f"http://hooks.example.test:{receiver.server.server_address[1]}/x", "msg_1", "{}", ["whsec_" + "A" * 44]
        )
        assert refused.status_code is None and (refused.error or "").startswith("refused")
        assert receiver.requests == [], "nothing was sent to the rebound address"

        class Redirect(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(302)
                self.send_header("location", target.url + "/elsewhere")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        redirector = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        threading.Thread(target=redirector.serve_forever, daemon=True).start()
        loose = Sender(allow_private=True, timeout_s=5)
        answer = loose.send(f"http://127.0.0.1:{redirector.server_address[1]}/x", "msg_2", "{}", ["whsec_" + "A" * 44])
        redirector.shutdown()
        redirector.server_close()
        assert answer.status_code == 302 and not answer.ok
        assert target.requests == [], "the redirect was not followed"
    finally:
        target.close()


def test_job_submission_checks_its_webhook_with_the_outbound_guard_json_and_form(hooks: dict[str, Any]) -> None:
    client, platform, project = hooks["client"], hooks["system"].platform, str(hooks["project"])
    job = {"project": project, "type": "tts", "parameters": {"text": "Hi."}}
    platform.policies = dataclasses.replace(platform.policies, webhook_allow_private=False)
    try:
        for address in ("127.0.0.1", "10.0.0.1", "169.254.169.254"):
            resp = client.post("/api/jobs/", json={**job, "webhook": f"http://{address}/hook"})
            assert resp.status_code == 422, resp.text
            assert resp.json()["errors"][0]["loc"] == ["body", "webhook"]
        bad = client.post("/api/jobs/", json={**job, "webhook": "https://example.com/h", "webhook_events": ["job.nope"]})
        assert bad.status_code == 422, bad.text
    finally:
        platform.policies = dataclasses.replace(platform.policies, webhook_allow_private=True)
    form = {"project": project, "type": "tts", "parameters": json.dumps({"text": "Hi."})}
    ok = client.post(
        "/api/jobs/",
        data={**form, "webhook": hooks["receiver"].url + "/form", "webhook_events": "job.created, job.completed"},
    )
    assert ok.status_code == 201, ok.text
    assert hooks["system"].platform.get_job(uuid.UUID(ok.json()["id"])).webhook_events == ["job.created", "job.completed"]
    wait_until(lambda: any(r["path"] == "/form" for r in hooks["receiver"].requests), 30, message="the job.created delivery")
    bad_form = client.post("/api/jobs/", data={**form, "webhook": hooks["receiver"].url, "webhook_events": "[not json"})
    assert bad_form.status_code == 422, bad_form.text


def test_an_endpoint_whose_deliveries_all_fail_for_disable_after_is_disabled_and_says_why(hooks: dict[str, Any]) -> None:
    receiver, client = hooks["receiver"], hooks["client"]
    hooks["dispatcher"].disable_after_s = 1.0  # the schedule's attempts span more than that
    receiver.status = 500
    endpoint = client.post("/api/webhooks/", json={"url": receiver.url + "/down", "events": ["job.created"]}).json()
    _run_job(hooks)

    def disabled() -> dict[str, Any] | None:
        got = client.get(f"/api/webhooks/{endpoint['id']}/").json()
        return got if not got["enabled"] else None

    got = wait_until(disabled, 30, 0.1, "the failing endpoint to be disabled")
    assert "every delivery failed since" in got["disabled_reason"] and "HTTP 500" in got["disabled_reason"]
    assert len(receiver.requests) >= 2
