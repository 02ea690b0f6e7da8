"""Attacks on authentication against the running system (issue 13, findings 2, 6, 9, 10):
concurrent wrong passwords, throttling that must never lock a user out, stolen and raced
refresh tokens, signed download links after deactivation, malformed tokens and inputs."""

from __future__ import annotations

import io
import json
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

PROBLEM = "application/problem+json"


@pytest.fixture
def settings(settings: Any) -> Any:
    """The test client (127.0.0.1) is a trusted proxy, so X-Forwarded-For picks addresses."""
    return settings.model_copy(update={"trusted_proxies": "127.0.0.1/32"})


def password_checks(base: str) -> float:
    """``aiorch_password_checks_total`` of the API process."""
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("aiorch_password_checks_total "):
            return float(line.split()[1])
    raise AssertionError("no aiorch_password_checks_total in /metrics")


def login(base: str, username: str, password: str, address: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": address} if address else {}
    return httpx.post(f"{base}/api/token/", json={"username": username, "password": password}, headers=headers, timeout=60)


def login_when_allowed(base: str, username: str, password: str, address: str) -> httpx.Response:
    """Log in, waiting out the username's slowdown (each Retry-After at most 30 s)."""
    for _ in range(4):
        resp = login(base, username, password, address)
        if resp.status_code != 429:
            return resp
        wait = int(resp.headers["Retry-After"])
        assert 1 <= wait <= 30, resp.headers
        time.sleep(wait)
    raise AssertionError(f"still throttled: {resp.text}")


def test_forty_concurrent_wrong_passwords_get_at_most_ten_checks_and_never_lock_the_user_out(
    platform_up: dict[str, Any],
) -> None:
    base = platform_up["base"]
    before = password_checks(base)

    def attack(_: int) -> httpx.Response:
        deadline = time.monotonic() + 60
        while True:  # busy slots (all Argon2 checks of the process taken) → retry at once
            resp = login(base, "editor", "wrong-password")
            if resp.status_code != 429 or "at once" not in resp.json()["detail"] or time.monotonic() > deadline:
                return resp
            time.sleep(0.02)

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(attack, range(40)))
    statuses = [r.status_code for r in answers]
    checks = password_checks(base) - before
    assert set(statuses) <= {401, 429}, statuses
    assert 1 <= statuses.count(401) <= 10 and checks == statuses.count(401), (statuses, checks)
    for resp in answers:
        assert resp.headers["content-type"] == PROBLEM
        if resp.status_code == 429:
            assert 1 <= int(resp.headers["Retry-After"]) <= 300
    # every attempt, checked or throttled, is in the audit log
    audit = platform_up["clients"]["admin"].get("/api/audit/", params={"command": "ObtainToken", "page_size": 500}).json()
    rows = [r for r in audit["results"] if r["target"] == "editor" and r["outcome"] == "refused"]
    audited = [r["status"] for r in rows]
    assert audited.count(401) == statuses.count(401) and audited.count(429) >= statuses.count(429), audited
    # the same address with the right password stays throttled once its ten are spent
    for _ in range(10 - statuses.count(401)):
        login_when_allowed(base, "editor", "wrong-password", "127.0.0.1")
    spent = login(base, "editor", "editor-password")
    assert spent.status_code == 429 and 1 <= int(spent.headers["Retry-After"]) <= 300

    # another address still reaches a password check, after a Retry-After of at most 30 s
    checks = password_checks(base)
    assert login_when_allowed(base, "editor", "wrong-password", "198.51.100.7").status_code == 401
    assert password_checks(base) == checks + 1
    # and the right password works: slowed, never locked out
    ok = login_when_allowed(base, "editor", "editor-password", "198.51.100.8")
    assert ok.status_code == 200, ok.text
    assert ok.headers["Cache-Control"] == "no-store" and ok.headers["Pragma"] == "no-cache"


def test_refresh_tokens_rotate_a_reused_one_revokes_its_session_and_malformed_tokens_are_refused(
    platform_up: dict[str, Any], system: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api import sessions

    base, editor = platform_up["base"], platform_up["clients"]["editor"]

    def refresh(token: str) -> httpx.Response:
        return httpx.post(f"{base}/api/token/refresh/", json={"refresh": token}, timeout=60)

    def me(access: str) -> int:
        return httpx.get(f"{base}/api/profiles/me/", headers={"Authorization": f"Bearer {access}"}).status_code

    first = login(base, "editor", "editor-password").json()
    resp = refresh(first["refresh"])
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    second = resp.json()
    assert set(second) == {"access", "refresh"} and second["refresh"] != first["refresh"]
    assert me(second["access"]) == 200

    # presented again within the grace (two tabs racing): 401, nothing revoked
    raced = refresh(first["refresh"])
    assert raced.status_code == 401 and raced.headers["content-type"] == PROBLEM
    assert me(second["access"]) == 200 and me(first["access"]) == 200

    # two concurrent uses of one refresh token: exactly one rotates it
    with ThreadPoolExecutor(8) as pool:
        statuses = [r.status_code for r in pool.map(refresh, [second["refresh"]] * 8)]
    assert sorted(statuses) == [200] + [401] * 7, statuses

    # presented again after the grace: 401 and the whole session (every token of it) is revoked
    monkeypatch.setattr(sessions, "REUSE_GRACE_S", 0.0)
    assert refresh(second["refresh"]).status_code == 401
    assert me(first["access"]) == 401 and me(second["access"]) == 401
    assert httpx.post(f"{base}/api/token/verify/", json={"token": second["access"]}).status_code == 401
    assert editor.get("/api/profiles/me/").status_code == 200  # another session lives on

    # validly signed tokens without iat or with ill-typed claims, and unstorable credentials
    from infra.secrets import secret_key

    user_id = editor.get("/api/profiles/me/").json()["id"]
    secret = secret_key(system.settings)
    now = int(time.time())
    claims = {"sub": user_id, "type": "access", "exp": now + 60, "jti": "a" * 32, "rid": "b" * 32, "iat": now}
    forged = [
        {k: v for k, v in claims.items() if k != "iat"},  # validly signed, no iat
        {**claims, "sub": {"id": user_id}},
        {**claims, "rid": ["x"]},
        {**claims, "iat_us": "soon"},
        {**claims, "sub": "a\x00b"},
    ]
    for bad in forged:
        resp = httpx.get(f"{base}/api/profiles/me/", headers={"Authorization": f"Bearer {jwt.encode(bad, secret)}"})
        assert resp.status_code == 401 and resp.headers["content-type"] == PROBLEM, (bad, resp.text)
        assert httpx.post(f"{base}/api/token/verify/", json={"token": jwt.encode(bad, secret)}).status_code == 401

    for username, password in [("edi\x00tor", "editor-password"), ("editor\ud800", "x"), ("editor", "pass\ud800")]:
        body = json.dumps({"username": username, "password": password})  # escapes: valid JSON
        resp = httpx.post(f"{base}/api/token/", content=body, headers={"Content-Type": "application/json"})
        assert resp.status_code in (401, 422) and resp.headers["content-type"] == PROBLEM, resp.text
        assert resp.headers["Cache-Control"] == "no-store"


def tiny_wav() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 1600)
    return buf.getvalue()


def test_signed_links_are_bound_to_their_user_and_refuse_malformed_signatures(platform_up: dict[str, Any]) -> None:
    base, clients, project = platform_up["base"], platform_up["clients"], platform_up["project"]
    data = {"project": project, "type": "stt", "parameters": "{}"}
    job = clients["editor"].post("/api/jobs/", data=data, files={"input_file": ("a.wav", tiny_wav(), "audio/wav")})
    assert job.status_code == 201, job.text
    path = f"/api/jobs/{job.json()['id']}/"
    assert clients["editor"].post(f"{path}cancel/").status_code == 202  # no engine time needed
    links = {who: clients[who].get(path).json()["input_files"]["input_file"]["url"] for who in ("editor", "viewer")}
    assert all(link.startswith(f"{base}/api/") for link in links.values())  # absolute, as DRF's (issue 12)
    links = {who: link.removeprefix(base) for who, link in links.items()}
    for link in links.values():
        assert httpx.get(base + link).content == tiny_wav()  # no Bearer header: the signature suffices

    def with_query(link: str, **changes: str) -> str:
        parts = urlsplit(link)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
        return f"{parts.path}?{urlencode(query)}"

    viewer_id = clients["viewer"].get("/api/profiles/me/").json()["id"]
    editor_id = clients["editor"].get("/api/profiles/me/").json()["id"]
    assert httpx.get(base + with_query(links["viewer"], uid=editor_id)).status_code == 401  # not the signed user
    for sig in ["é" * 32, "\u0661" * 32, "0" * 5000, ""]:
        resp = httpx.get(base + with_query(links["viewer"], sig=sig))
        assert resp.status_code == 401 and resp.headers["content-type"] == PROBLEM, resp.text
    for exp in ["soon", "9" * 5000, "-1"]:
        resp = httpx.get(base + with_query(links["viewer"], exp=exp))
        assert 400 <= resp.status_code < 500 and resp.headers["content-type"] == PROBLEM, resp.text

    # deactivating the viewer ends the viewer's links; the editor's still work
    assert clients["admin"].post(f"/api/users/{viewer_id}/deactivate/").status_code == 200
    resp = httpx.get(base + links["viewer"])
    assert resp.status_code == 401 and resp.headers["content-type"] == PROBLEM
    assert httpx.get(base + links["editor"]).status_code == 200
    # archiving the job ends every link to its files
    assert clients["editor"].delete(path).status_code == 204
    assert httpx.get(base + links["editor"]).status_code == 404
