"""Issue 13, findings 1 and 4 on the real system: text that no read model can hold is refused
at the boundary (422 naming the field, nothing stored) or, when a processor reports it,
stored repaired; a user's quotas are set by admins only."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from commands.context import Actor, Context
from commands.messages import CompleteJob, EndAttempt, StartJob, UpdateProgress
from tests.conftest import wait_until

PROC = Context(Actor("proc-validation", None, "processor"), "run-validation")
FFFD = "\ufffd"


def head(system: Any) -> int:
    """The event store's last position."""
    return int(system.platform.recorder.max_notification_id() or 0)


def refused(system: Any, send: Callable[[], httpx.Response], status: int, loc: list[Any] | None = None) -> dict[str, Any]:
    """``send()`` answers ``status`` as problem+json (naming ``loc``) and stores no event."""
    before = head(system)
    resp = send()
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = dict(resp.json())
    assert body["status"] == status and body["instance"]
    if loc is not None:
        assert loc in [e["loc"] for e in body["errors"]], body
    assert head(system) == before, "a refused request stored an event"
    return body


def stop_processor(runner: Any) -> None:
    for role, _thread in list(runner.threads):  # these tests drive their jobs themselves
        if type(role).__name__ == "Processor":
            runner.stop(role)


def test_hostile_text_is_refused_naming_the_field_and_repaired_from_processors(platform_up: dict[str, Any], system: Any) -> None:
    clients = platform_up["clients"]
    admin, editor, viewer = clients["admin"], clients["editor"], clients["viewer"]
    project = platform_up["project"]

    # a project's name (the request schema) and the same through PATCH (the command)
    refused(system, lambda: editor.post("/api/projects/", json={"name": "Pod\x00cast"}), 422, ["body", "name"])
    refused(system, lambda: editor.patch(f"/api/projects/{project}/", json={"name": "x\x00"}), 422, ["body", "name"])
    refused(
        system, lambda: editor.patch(f"/api/projects/{project}/", json={"description": "a\x1bb"}), 422, ["body", "description"]
    )

    # job parameters, flat and nested
    job = {"project": project, "type": "tts"}
    refused(
        system,
        lambda: editor.post("/api/jobs/", json={**job, "parameters": {"text": "hi\x00"}}),
        422,
        ["body", "parameters", "text"],
    )
    nested = {"text": "hello", "voice": {"name": ["ok", "bad\x00"]}}
    refused(
        system,
        lambda: editor.post("/api/jobs/", json={**job, "parameters": nested}),
        422,
        ["body", "parameters", "voice", "name", 1],
    )
    refused(system, lambda: editor.post("/api/jobs/", json={**job, "parameters": {"text": "hi", "voice": "a\nb"}}), 422)

    # a setting's value
    editor_id = editor.get("/api/profiles/me/").json()["id"]
    refused(
        system,
        lambda: editor.post("/api/settings/", json={"key": "default_language", "value": "e\x00n", "user": editor_id}),
        422,
        ["body", "value"],
    )

    # a viewer's own email
    viewer_id = viewer.get("/api/profiles/me/").json()["id"]
    refused(
        system, lambda: viewer.patch(f"/api/profiles/{viewer_id}/", json={"email": "v\x00@example.com"}), 422, ["body", "email"]
    )

    # an agent's name, description, configuration; explicit nulls
    agent = {"name": "Narrator", "type": "tts", "configuration": {"language": "en"}}
    refused(system, lambda: editor.post("/api/agents/", json={**agent, "name": "Nar\x00rator"}), 422, ["body", "name"])
    refused(system, lambda: editor.post("/api/agents/", json={**agent, "description": "\x00"}), 422, ["body", "description"])
    refused(
        system,
        lambda: editor.post("/api/agents/", json={**agent, "configuration": {"voice": "v\x00"}}),
        422,
        ["body", "configuration", "voice"],
    )
    created = editor.post("/api/agents/", json=agent)
    assert created.status_code in (201, 202), created.text
    agent_id = created.json()["id"]
    wait_until(lambda: editor.get(f"/api/agents/{agent_id}/").status_code == 200, 30, message="the agent to appear")
    for field in ("name", "description", "configuration"):
        body = refused(system, lambda f=field: editor.patch(f"/api/agents/{agent_id}/", json={f: None}), 422, ["body", field])
        assert [e["msg"] for e in body["errors"]] == ["must not be null"]
    assert editor.get(f"/api/agents/{agent_id}/").json()["name"] == "Narrator"

    # a provider's name (admins) and a login name (no token needed)
    refused(
        system,
        lambda: admin.post("/api/providers/", json={"name": "p\x00", "kind": "local"}),
        422,
        ["body", "name"],
    )
    anonymous = httpx.post(f"{platform_up['base']}/api/token/", json={"username": "adm\x00in", "password": "x"}, timeout=30)
    assert anonymous.status_code == 422 and anonymous.headers["content-type"].startswith("application/problem+json")

    # -- what processors report: repaired, never refused (the job does not fail for it) --
    stop_processor(platform_up["runner"])
    platform = system.platform

    def running_job() -> uuid.UUID:
        resp = editor.post("/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {"text": "Hi."}})
        assert resp.status_code in (201, 202), resp.text
        jid = uuid.UUID(resp.json()["id"])
        platform.start_job(StartJob(jid, platform.get_job(jid).version, PROC.actor.id), PROC)
        return jid

    jid = running_job()
    wait_until(lambda: editor.get(f"/api/jobs/{jid}/").json().get("status") == "running", 30, message="the job to run")

    # an admin's external worker is a person: refused
    url = f"/api/jobs/{jid}/update_progress/"
    refused(system, lambda: admin.post(url, json={"progress": 10, "stage": "de\x00code"}), 422, ["body", "stage"])
    refused(system, lambda: admin.post(url, json={"progress": 10, "logs": ["fine", "bad\x00"]}), 422, ["body", "logs", 1])

    # a processor's reports (a remote provider's transcript): stored with U+FFFD
    now = datetime.now(UTC).isoformat()
    platform.update_progress(
        UpdateProgress(jid, 50, "deco\x00ding", [{"at": now, "level": "info", "message": "said \x00\x1b[0m"}]), PROC
    )
    meta = {"transcript": "hello\x00world", "language": "en", "segments": [{"start": 0.0, "end": 1.0, "text": "hello\x00"}]}
    platform.complete_job(CompleteJob(jid, {"files": [], "meta": meta}, PROC.actor.id, 1), PROC)
    result = editor.get(f"/api/jobs/{jid}/result/", params={"min_position": head(system)})
    assert result.status_code == 200, result.text
    assert result.json()["meta"]["transcript"] == f"hello{FFFD}world"
    assert result.json()["meta"]["segments"][0]["text"] == f"hello{FFFD}"
    lines = editor.get(f"/api/jobs/{jid}/logs/").json()["results"]
    assert f"said {FFFD}{FFFD}[0m" in [line["message"] for line in lines]
    history = editor.get(f"/api/jobs/{jid}/history/").json()["results"]
    assert [i["data"]["stage"] for i in history if i["type"] == "JobProgressed"] == [f"deco{FFFD}ding"]

    # an error message of a failed attempt, too
    failed = running_job()
    platform.end_attempt(EndAttempt(failed, "engine_error", "provider answered \x00\x07", False, PROC.actor.id, 1), PROC)
    job = editor.get(f"/api/jobs/{failed}/", params={"min_position": head(system)}).json()
    assert job["status"] == "failed" and job["error"]["message"] == f"provider answered {FFFD}{FFFD}"

    # the read models still follow: a new project appears at once
    fine = editor.post("/api/projects/", json={"name": "Still fine", "description": "line one\nline two\ttabbed"})
    assert fine.status_code == 201, fine.text
    assert fine.json()["description"] == "line one\nline two\ttabbed"


def test_quotas_are_set_by_admins_and_unknown_keys_refused(platform_up: dict[str, Any], system: Any) -> None:
    clients = platform_up["clients"]
    admin, editor = clients["admin"], clients["editor"]
    editor_id = editor.get("/api/profiles/me/").json()["id"]
    raised = {"max_concurrent_jobs": 1000, "max_file_size_mb": 102_400, "max_input_duration_s": 86_400}
    for key, value in raised.items():
        mine = {"key": key, "value": value, "user": editor_id}
        refused(system, lambda m=mine: editor.post("/api/settings/", json=m), 403)
        by_admin = admin.post("/api/settings/", json={**mine, "value": 2})
        assert by_admin.status_code in (201, 202), by_admin.text
        sid = by_admin.json()["id"]
        wait_until(lambda s=sid: editor.get(f"/api/settings/{s}/").status_code == 200, 30, message=f"setting {key}")
        refused(system, lambda s=sid, v=value: editor.patch(f"/api/settings/{s}/", json={"value": v}), 403)
        refused(system, lambda s=sid, v=value: editor.put(f"/api/settings/{s}/", json={"value": v}), 403)
        refused(system, lambda s=sid: editor.delete(f"/api/settings/{s}/"), 403)
    effective = editor.get("/api/settings/effective/", params={"min_position": head(system)}).json()
    assert {k: effective[k] for k in raised} == dict.fromkeys(raised, 2)

    # default_language stays the user's own
    own = editor.post("/api/settings/", json={"key": "default_language", "value": "es", "user": editor_id})
    assert own.status_code in (201, 202), own.text

    # unknown keys
    refused(system, lambda: admin.post("/api/settings/", json={"key": "max_jobs", "value": 1}), 422, ["body", "key"])
    refused(
        system,
        lambda: editor.post("/api/settings/", json={"key": "theme", "value": "dark", "user": editor_id}),
        422,
        ["body", "key"],
    )
    refused(
        system, lambda: admin.post("/api/settings/", json={"key": "max_concurrent_jobs\x00", "value": 1}), 422, ["body", "key"]
    )


def test_hostile_webhook_bodies_are_refused_and_store_nothing(platform_up: dict[str, Any], system: Any) -> None:
    """The bodies this round added (webhook endpoints, per-job webhooks) follow the same
    boundary: NUL, huge, wrongly typed and deeply nested values → 422, nothing stored."""
    editor = platform_up["clients"]["editor"]
    project = platform_up["project"]
    hook = {"url": "https://hooks.example.com/in", "events": ["job.completed"]}
    deep: Any = "x"
    for _ in range(40):
        deep = [deep]
    cases: list[tuple[dict[str, Any], list[Any] | None]] = [
        ({**hook, "description": "a\x00b"}, ["body", "description"]),
        ({**hook, "url": "https://hooks.example.com/\x00"}, None),
        ({**hook, "url": "https://" + "a" * 5000 + ".example.com/"}, None),
        ({**hook, "events": "job.completed"}, None),
        ({**hook, "events": [deep]}, None),
        ({**hook, "events": ["job.\x00completed"]}, None),
        ({**hook, "enabled": "sometimes"}, None),
        ({**hook, "url": 12}, None),
    ]
    for body, loc in cases:
        refused(system, lambda body=body: editor.post("/api/webhooks/", json=body), 422, loc)
    job = {"project": project, "type": "tts", "parameters": {"text": "hello"}}
    for extra in (
        {"webhook": "https://hooks.example.com/\x00"},
        {"webhook": "https://hooks.example.com/in", "webhook_events": ["job.completed\x00"]},
        {"webhook": "http://169.254.169.254/latest/meta-data/"},
        {"webhook": ["https://hooks.example.com/in"]},
    ):
        refused(system, lambda extra=extra: editor.post("/api/jobs/", json={**job, **extra}), 422)
