"""The platform's rules over HTTP on real services: upload limits, concurrency limits,
agents, providers' secrets, idempotency, token revocation and login throttling."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from infra.roles import create_user
from tests.conftest import SHARED_DATA, Client, wait_until


@pytest.fixture
def api(runner: Any, system: Any) -> dict[str, Any]:
    """Projector and API running; an admin and an editor with a project."""
    runner.projector()
    base = runner.api()
    for name, role in (("admin", "admin"), ("editor", "editor")):
        create_user(system, name, f"{name}-password", role)
    projector = system.projector()
    wait_until(lambda: projector.position() >= system.platform.head())
    admin, editor = Client(base, "admin", "admin-password"), Client(base, "editor", "editor-password")
    project = editor.post("/api/projects/", json={"name": "p"}).json()["id"]
    return {"base": base, "admin": admin, "editor": editor, "project": project}


def event_count(system: Any) -> int:
    with system.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM aiorch_events")).scalar_one())


def blobs(system: Any) -> list[str]:
    return sorted(system.blobs.sizes())  # the local folder's files, or the bucket's objects


@pytest.mark.parametrize("blob_backend", ["local", "s3"], indirect=True)
def test_upload_one_byte_over_the_limit_is_refused_leaving_no_blob_and_no_event(api: dict[str, Any], system: Any) -> None:
    admin, editor = api["admin"], api["editor"]
    assert admin.post("/api/settings/", json={"key": "max_file_size_mb", "value": 1}).status_code == 201
    assert editor.get("/api/settings/effective/").json()["max_file_size_mb"] == 1
    wav = (SHARED_DATA / "speech" / "cards-005.wav").read_bytes()
    limit = 1024 * 1024
    over = bytes(wav) + bytes(limit + 1 - len(wav))  # a real WAV header, padded to limit + 1 bytes
    before_events, before_blobs = event_count(system), blobs(system)
    resp = editor.post(
        "/api/jobs/", data={"project": api["project"], "type": "stt"}, files={"input_file": ("big.wav", over, "audio/wav")}
    )
    assert resp.status_code == 413, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert event_count(system) == before_events
    assert blobs(system) == before_blobs
    exactly = bytes(wav) + bytes(limit - len(wav))
    ok = editor.post(
        "/api/jobs/", data={"project": api["project"], "type": "stt"}, files={"input_file": ("fits.wav", exactly, "audio/wav")}
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["input_files"]["input_file"]["size"] == limit


def open_uploads(system: Any) -> list[str]:
    """Unfinished multipart uploads under the test's prefix ([] for the local folder)."""
    store = system.blobs
    if not hasattr(store, "bucket"):
        return []
    answer = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix + "/")
    return sorted(u["Key"] for u in answer.get("Uploads", []))


def form(fields: list[tuple[str, str, bytes | None]], boundary: str = "aiorch-orphans") -> tuple[bytes, str]:
    """A multipart body of ``(name, filename or "", bytes or None for a text value)`` parts
    in the order given, and its Content-Type."""
    out = b""
    for name, filename, data in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if data is not None else "")
        value = data if data is not None else filename.encode()
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("blob_backend", ["local", "s3"], indirect=True)
def test_refused_and_failed_submissions_leave_no_upload_behind(api: dict[str, Any], system: Any) -> None:
    admin, editor, project = api["admin"], api["editor"], api["project"]
    assert admin.post("/api/settings/", json={"key": "max_file_size_mb", "value": 20}).status_code == 201
    wav = (SHARED_DATA / "speech" / "cards-005.wav").read_bytes()
    mib = 1024 * 1024
    before_events, before_blobs = event_count(system), blobs(system)

    def nothing_kept() -> bool:
        return event_count(system) == before_events and blobs(system) == before_blobs and open_uploads(system) == []

    refusals = [
        # stored, then the submission is refused: the project is not an id, or no project of ours
        ([("project", "nope", None), ("type", "stt", None), ("input_file", "a.wav", wav)], 422),
        ([("project", str(uuid.uuid4()), None), ("type", "stt", None), ("input_file", "a.wav", wav)], 422),
        # sent before the type field: stored, then refused as a field a tts job does not take
        ([("project", project, None), ("input_file", "a.wav", wav), ("type", "tts", None)], 422),
        # a first file stored, the second over the limit (9 MiB of it already in the store on S3)
        (
            [
                ("project", project, None),
                ("type", "voice_cloning", None),
                ("reference_file", "ref.wav", wav),
                ("input_file", "big.wav", wav + bytes(20 * mib + 1 - len(wav))),
            ],
            413,
        ),
        # parameters that are not JSON, after the file
        ([("project", project, None), ("type", "stt", None), ("input_file", "a.wav", wav), ("parameters", "{", None)], 422),
    ]
    for fields, status in refusals:
        body, ctype = form(fields)
        answer = editor.post("/api/jobs/", content=body, headers={"Content-Type": ctype})
        assert answer.status_code == status, ([f[0] for f in fields], answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert nothing_kept(), ([f[0] for f in fields], blobs(system), open_uploads(system))

    # a client that goes away mid-upload, after a first 8 MiB part has reached the store
    body, ctype = form([("project", project, None), ("type", "stt", None), ("input_file", "cut.wav", wav + bytes(16 * mib))])
    host, port = httpx.URL(api["base"]).host, httpx.URL(api["base"]).port
    with socket.create_connection((host, port or 80)) as conn:
        head = (
            f"POST /api/jobs/ HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"Authorization: {editor.http.headers['Authorization']}\r\n\r\n"
        )
        conn.sendall(head.encode() + body[: 12 * mib])
        wait_until(lambda: blobs(system) != before_blobs or open_uploads(system), 30, 0.05, "the upload to reach the store")
    wait_until(nothing_kept, 30, 0.2, "the dropped upload to be removed")

    # an idempotent replay stores its files, then drops them: the first submission's are the job's
    fields = [("project", project, None), ("type", "stt", None), ("input_file", "a.wav", wav)]
    body, ctype = form(fields)
    headers = {"Content-Type": ctype, "Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = editor.post("/api/jobs/", content=body, headers=headers)
    again = editor.post("/api/jobs/", content=body, headers=headers)
    assert first.status_code == 201 and again.json()["id"] == first.json()["id"], (first.text, again.text)
    assert len(blobs(system)) == len(before_blobs) + 1 and open_uploads(system) == []


def test_agent_defaults_merge_and_an_inactive_agent_is_refused(api: dict[str, Any]) -> None:
    editor = api["editor"]
    bad = editor.post("/api/agents/", json={"name": "x", "type": "tts", "configuration": {"speed": 3}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "configuration", "speed"]
    agent = editor.post(
        "/api/agents/", json={"name": "Narrator", "type": "tts", "configuration": {"language": "en", "voice": "joe"}}
    ).json()
    job = editor.post(
        "/api/jobs/",
        json={"project": api["project"], "type": "tts", "agent": agent["id"], "parameters": {"text": "Hello", "voice": "other"}},
    )
    assert job.status_code == 201, job.text
    assert job.json()["parameters"] == {"text": "Hello", "voice": "other", "language": "en"}
    assert job.json()["agent"] == agent["id"]
    assert editor.post(f"/api/agents/{agent['id']}/deactivate/").json()["status"] == "inactive"
    refused = editor.post(
        "/api/jobs/", json={"project": api["project"], "type": "tts", "agent": agent["id"], "parameters": {"text": "Hello"}}
    )
    assert refused.status_code == 409
    wrong_type = editor.post("/api/agents/", json={"name": "s", "type": "stt", "configuration": {}}).json()
    assert (
        editor.post(
            "/api/jobs/", json={"project": api["project"], "type": "tts", "agent": wrong_type["id"], "parameters": {"text": "x"}}
        ).status_code
        == 422
    )


def test_provider_key_never_leaves_the_store_in_clear(api: dict[str, Any], system: Any, caplog: Any) -> None:
    secret = f"sk-test-{uuid.uuid4().hex}"
    admin = api["admin"]
    caplog.set_level(logging.DEBUG)
    seen = []
    created = admin.post(
        "/api/providers/",
        json={"name": "remote", "kind": "openai_compatible", "base_url": "http://models.example.org/v1", "api_key": secret},
    )
    seen.append(created.text)
    assert created.status_code == 201 and created.json()["has_api_key"] is True and "api_key" not in created.json()
    pid = created.json()["id"]
    seen += [admin.get("/api/providers/").text, admin.get(f"/api/providers/{pid}/").text]
    rotated = f"sk-rotated-{uuid.uuid4().hex}"
    seen.append(admin.patch(f"/api/providers/{pid}/", json={"api_key": rotated, "enabled": False}).text)
    seen.append(admin.put(f"/api/providers/{pid}/", json={"name": "renamed", "base_url": "http://models.example.org/v2"}).text)
    assert admin.get(f"/api/providers/{pid}/").json()["has_api_key"] is True  # PUT without a key keeps it
    for body in seen:
        assert secret not in body and rotated not in body
    with system.engine.connect() as conn:
        stored = b"".join(bytes(r[0]) for r in conn.execute(text("SELECT state FROM aiorch_events")))
        tables = conn.execute(text("SELECT string_agg(t::text, '') FROM rm_providers t")).scalar_one()
        audit = conn.execute(text("SELECT string_agg(a::text, '') FROM audit_log a")).scalar_one()
    for needle in (secret, rotated):
        assert needle.encode() not in stored
        assert needle not in (tables or "") and needle not in (audit or "")
        assert needle not in caplog.text


def test_an_idempotency_key_replayed_concurrently_yields_one_job(api: dict[str, Any], system: Any) -> None:
    base, editor = api["base"], api["editor"]
    body = {"project": api["project"], "type": "tts", "parameters": {"text": "only once"}}
    key = f"key-{uuid.uuid4()}"
    answers: list[httpx.Response] = []

    def submit() -> None:
        with httpx.Client(base_url=base, headers=dict(editor.http.headers), timeout=30) as c:
            answers.append(c.post("/api/jobs/", json=body, headers={"Idempotency-Key": key}))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    with system.engine.connect() as conn:
        submitted = conn.execute(text("SELECT count(*) FROM aiorch_events WHERE topic LIKE '%JobSubmitted'")).scalar_one()
    assert submitted == 1
    other = editor.post("/api/jobs/", json={**body, "parameters": {"text": "another"}}, headers={"Idempotency-Key": key})
    assert other.status_code == 422
    assert editor.post("/api/jobs/", json=body, headers={"Idempotency-Key": "k" * 256}).status_code == 422


def test_logout_password_change_and_deactivation_revoke_tokens(api: dict[str, Any], system: Any) -> None:
    base, admin = api["base"], api["admin"]
    create_user(system, "carol", "carol-password", "editor")
    projector = system.projector()
    wait_until(lambda: projector.position() >= system.platform.head())

    def login(password: str = "carol-password") -> dict[str, str]:
        resp = httpx.post(f"{base}/api/token/", json={"username": "carol", "password": password})
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def me(access: str) -> int:
        return httpx.get(f"{base}/api/profiles/me/", headers={"Authorization": f"Bearer {access}"}).status_code

    # logout: that refresh token and its access tokens stop; another session lives on
    first, second = login(), login()
    assert httpx.post(f"{base}/api/token/logout/", json={"refresh": first["refresh"]}).status_code == 204
    assert me(first["access"]) == 401
    assert httpx.post(f"{base}/api/token/refresh/", json={"refresh": first["refresh"]}).status_code == 401
    assert httpx.post(f"{base}/api/token/verify/", json={"token": first["access"]}).status_code == 401
    assert me(second["access"]) == 200

    # own password change: the other sessions stop, the one that changed it lives on
    third = login()
    resp = httpx.post(
        f"{base}/api/profiles/me/password/",
        headers={"Authorization": f"Bearer {third['access']}"},
        json={"old_password": "carol-password", "new_password": "carol-new-password"},
    )
    assert resp.status_code == 204, resp.text
    assert me(second["access"]) == 401
    assert me(third["access"]) == 200
    assert httpx.post(f"{base}/api/token/", json={"username": "carol", "password": "carol-password"}).status_code == 401
    fourth = login("carol-new-password")

    # deactivation: every token and every login fails
    carol_id = httpx.get(f"{base}/api/profiles/me/", headers={"Authorization": f"Bearer {fourth['access']}"}).json()["id"]
    assert admin.post(f"/api/users/{carol_id}/deactivate/").status_code == 200
    assert me(fourth["access"]) == 401 and me(third["access"]) == 401
    assert httpx.post(f"{base}/api/token/refresh/", json={"refresh": fourth["refresh"]}).status_code == 401
    assert httpx.post(f"{base}/api/token/", json={"username": "carol", "password": "carol-new-password"}).status_code == 401
    assert admin.post(f"/api/users/{carol_id}/reactivate/").status_code == 200
    assert me(fourth["access"]) == 401  # old tokens stay revoked
    login("carol-new-password")


def test_more_than_ten_failed_logins_answer_429_with_retry_after(api: dict[str, Any]) -> None:
    base = api["base"]
    statuses = [httpx.post(f"{base}/api/token/", json={"username": "editor", "password": "wrong"}).status_code for _ in range(11)]
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    throttled = httpx.post(f"{base}/api/token/", json={"username": "editor", "password": "editor-password"})
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 300
    assert httpx.post(f"{base}/api/token/", json={"username": "admin", "password": "admin-password"}).status_code == 200


def test_a_user_created_a_moment_ago_logs_in_once_the_read_models_catch_up(runner: Any, system: Any) -> None:
    base = runner.api()  # the projector is not running yet: the users read model lags the store
    create_user(system, "newcomer", "newcomer-password", "editor")
    answers: list[httpx.Response] = []
    login = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{base}/api/token/", json={"username": "newcomer", "password": "newcomer-password"}, timeout=30)
        )
    )
    login.start()
    time.sleep(1.0)
    assert answers == [], "the login waits for the read models instead of answering 401"
    runner.projector()  # within the read-wait (AIORCH_READ_WAIT_S = 5 s here)
    login.join(30)
    assert [a.status_code for a in answers] == [200], [a.text for a in answers]
    assert set(answers[0].json()) == {"access", "refresh"}
    unknown = httpx.post(f"{base}/api/token/", json={"username": "nobody", "password": "x"}, timeout=30)
    assert unknown.status_code == 401  # caught up: an unknown name answers at once


def test_archiving_a_project_cancels_its_pending_jobs_and_keeps_history(api: dict[str, Any], system: Any) -> None:
    editor = api["editor"]
    jobs = [
        editor.post("/api/jobs/", json={"project": api["project"], "type": "tts", "parameters": {"text": f"j{i}"}}).json()["id"]
        for i in range(3)
    ]
    assert editor.delete(f"/api/projects/{api['project']}/").status_code == 204
    assert editor.get(f"/api/projects/{api['project']}/").status_code == 404
    assert api["project"] not in {p["id"] for p in editor.get("/api/projects/").json()["results"]}
    for job_id in jobs:
        assert system.platform.get_job(uuid.UUID(job_id)).status == "cancelled"
    assert (
        editor.post("/api/jobs/", json={"project": api["project"], "type": "tts", "parameters": {"text": "late"}}).status_code
        == 422
    )


def test_pending_job_edit_retry_and_logs(api: dict[str, Any]) -> None:
    editor = api["editor"]
    job = editor.post("/api/jobs/", json={"project": api["project"], "type": "tts", "parameters": {"text": "a"}}).json()
    patched = editor.patch(f"/api/jobs/{job['id']}/", json={"parameters": {"text": "b"}, "priority": "high"})
    assert patched.status_code == 200 and patched.json()["parameters"] == {"text": "b"} and patched.json()["priority"] == "high"
    assert editor.patch(f"/api/jobs/{job['id']}/", json={"parameters": {"txt": "b"}}).status_code == 422
    assert editor.post(f"/api/jobs/{job['id']}/retry/").status_code == 409  # pending
    assert editor.post(f"/api/jobs/{job['id']}/cancel/").json()["status"] == "cancelled"
    assert editor.patch(f"/api/jobs/{job['id']}/", json={"priority": "low"}).status_code == 409
    retried = editor.post(f"/api/jobs/{job['id']}/retry/")
    assert retried.status_code == 202 and retried.json()["status"] == "pending" and retried.json()["attempt"] == 2
    logs = editor.get(f"/api/jobs/{job['id']}/logs/").json()
    assert logs == {"count": 0, "next": None, "previous": None, "results": []}
    assert json.loads(json.dumps(logs)) == logs


def test_parallel_submissions_never_run_more_than_max_concurrent_jobs(
    api: dict[str, Any], system: Any, runner: Any, model_dir: Any
) -> None:
    from infra.roles import processor
    from processors.engines import build_engines

    editor, admin = api["editor"], api["admin"]  # a user's limits are admins' to set (issue 13, finding 4)
    assert (
        admin.post(
            "/api/settings/",
            json={"key": "max_concurrent_jobs", "value": 2, "user": editor.get("/api/profiles/me/").json()["id"]},
        ).status_code
        == 201
    )
    runner.relay()
    for i in range(3):  # three processors, each with its own engine, so three jobs could run at once
        proc = processor(system, ["tts"], processor_id_=f"p{i}")
        proc.engines = build_engines(["tts"], model_dir)
        runner.start(proc, f"processor-{i}")
    body = {"project": api["project"], "type": "tts"}
    answers: list[httpx.Response] = []

    def submit(i: int) -> None:
        with httpx.Client(base_url=api["base"], headers=dict(editor.http.headers), timeout=60) as c:
            answers.append(c.post("/api/jobs/", json={**body, "parameters": {"text": f"Job number {i} is short."}}))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert [a.status_code for a in answers] == [201] * 20
    ids = {a.json()["id"] for a in answers}
    wait_until(
        lambda: all(system.platform.get_job(uuid.UUID(j)).status == "completed" for j in ids), 180, 0.5, "all 20 jobs to complete"
    )
    running, most = set(), 0
    start = 0
    while batch := system.platform.recorder.select_notifications(start, 500, inclusive_of_start=False):
        for n in batch:
            kind = n.topic.rsplit(".", 1)[-1]
            if str(n.originator_id) in ids and kind == "JobStarted":
                running.add(n.originator_id)
            elif kind in ("JobCompleted", "JobFailed", "JobCancelled"):
                running.discard(n.originator_id)
            most = max(most, len(running))
        start = batch[-1].id
    assert most == 2, f"at most {most} ran at once"
