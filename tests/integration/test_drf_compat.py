"""Lists and bodies as a frontend written for Django REST Framework expects them (issue 12):
DRF's pagination (capped ``page_size``, 404 ``Invalid page.``, ``page=last``), ordering
(unknown fields ignored, several fields, priority by rank), search (every term, any field,
``%``/``_`` literal), form-urlencoded bodies, and absolute URLs (``AIORCH_PUBLIC_URL``, else
the request's own, ``X-Forwarded-*`` only from trusted proxies)."""

from __future__ import annotations

import io
import json
import threading
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from infra.embedded import free_port
from tests.conftest import wait_until

PROBLEM = "application/problem+json"


def tiny_wav() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 1600)
    return buf.getvalue()


def stop_processors(platform_up: dict[str, Any]) -> None:
    """No processor: submitted jobs stay pending (no engine time needed)."""
    runner = platform_up["runner"]
    for role, _thread in list(runner.threads):
        if type(role).__name__ == "Processor":
            runner.stop(role)


@contextmanager
def serve(system: Any, **settings: Any) -> Iterator[str]:
    """Another API process of ``system`` with ``settings`` changed; its base URL."""
    import uvicorn

    from infra.roles import api_app

    saved = {k: getattr(system.settings, k) for k in settings}
    for k, v in settings.items():
        setattr(system.settings, k, v)
    try:
        app = api_app(system)
    finally:
        for k, v in saved.items():
            setattr(system.settings, k, v)
    port = free_port()
    # as infra.cli runs it: X-Forwarded-* is the app's to believe (AIORCH_TRUSTED_PROXIES), not uvicorn's
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False))
    thread = threading.Thread(target=server.run, name="api-extra", daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, message="the extra API to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def names(resp: httpx.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [p["name"] for p in resp.json()["results"]]


def test_pagination_ordering_and_search_as_drf(platform_up: dict[str, Any]) -> None:
    base, editor = platform_up["base"], platform_up["clients"]["editor"]
    made = [
        ("Alpha 100% pure", "first"),
        ("alpha_beta", "second"),
        ("Gamma ray", "the quick brown fox"),
        ("Delta", "Brown bear"),
        ("Same", "older"),
        ("Same", "newer"),
    ]
    for name, description in made:
        assert editor.post("/api/projects/", json={"name": name, "description": description}).status_code == 201
    total = len(made) + 1  # and the fixture's "Test project"

    # search: every term (AND) in any field (OR), case-insensitive, % and _ literal
    search = lambda q: sorted(names(editor.get("/api/projects/", params={"search": q})))  # noqa: E731
    assert search("brown fox") == ["Gamma ray"]
    assert search("BROWN") == ["Delta", "Gamma ray"]
    assert search("alpha pure") == ["Alpha 100% pure"]
    assert search("%") == ["Alpha 100% pure"]
    assert search("_") == ["alpha_beta"]
    assert search("alpha,second") == ["alpha_beta"]
    assert search('"quick brown"') == ["Gamma ray"]
    assert search("brown nothing-like-this") == []
    assert search("  ") == sorted(n for n, _ in [*made, ("Test project", "")])

    # ordering: several fields, unknown ones ignored, the default when none is left
    everyone = names(editor.get("/api/projects/", params={"page_size": 100}))
    assert everyone[:2] == ["Same", "Same"] and everyone[-1] == "Test project"  # -created_at
    by_name = names(editor.get("/api/projects/", params={"ordering": "name,-created_at"}))
    assert by_name == sorted(by_name)
    sames = [p["description"] for p in editor.get("/api/projects/", params={"ordering": "name,-created_at"}).json()["results"]]
    assert [d for d in sames if d in ("older", "newer")] == ["newer", "older"]
    assert names(editor.get("/api/projects/", params={"ordering": "-name,bogus"})) == sorted(by_name, reverse=True)
    assert names(editor.get("/api/projects/", params={"ordering": "bogus,owner__password"})) == everyone

    # page_size: capped at 500, 0 or nonsense → the default (50)
    for size in ("100000", "0", "-3", "abc", ""):
        page = editor.get("/api/projects/", params={"page_size": size})
        assert page.status_code == 200 and page.json()["count"] == total, (size, page.text)
    from api.pagination import page_params

    assert [page_params(None, size).page_size for size in ("100000", "500", "7", "0", "x", None)] == [500, 500, 7, 50, 50, 50]

    # pages: absolute next/previous, page=last, 404 "Invalid page." past the end
    first = editor.get("/api/projects/", params={"page_size": 3, "ordering": "name"}).json()
    assert first["count"] == total and len(first["results"]) == 3 and first["previous"] is None
    assert first["next"].startswith(f"{base}/api/projects/?") and "page=2" in first["next"]
    second = editor.get(first["next"]).json()
    assert second["previous"].startswith(base) and "page=" not in second["previous"]  # DRF drops page=1
    assert editor.get(second["previous"]).json()["results"] == first["results"]
    last = editor.get("/api/projects/", params={"page_size": 3, "page": "last", "ordering": "name"}).json()
    assert len(last["results"]) == total - 6 and last["next"] is None and "page=2" in last["previous"]
    for page in ("4", "0", "abc", "9" * 40):
        resp = editor.get("/api/projects/", params={"page_size": 3, "page": page})
        assert resp.status_code == 404 and resp.headers["content-type"] == PROBLEM, (page, resp.text)
        assert resp.json()["detail"] == "Invalid page."
    empty = editor.get("/api/projects/", params={"search": "no such project"}).json()
    assert empty == {"count": 0, "next": None, "previous": None, "results": []}  # page 1 of nothing is fine
    assert editor.get("/api/projects/", params={"search": "no such project", "page": 2}).status_code == 404

    # users: the same search (admins)
    admin = platform_up["clients"]["admin"]
    found = admin.get("/api/users/", params={"search": "EDIT"}).json()["results"]
    assert [u["username"] for u in found] == ["editor"]


def test_form_bodies_and_priority_ordering(platform_up: dict[str, Any]) -> None:
    stop_processors(platform_up)
    admin, editor = platform_up["clients"]["admin"], platform_up["clients"]["editor"]
    project = platform_up["project"]

    # a job submitted as application/x-www-form-urlencoded, parameters as a JSON string
    ids = {}
    for priority in ("high", "low", "normal"):
        resp = editor.post(
            "/api/jobs/",
            data={"project": project, "type": "tts", "parameters": json.dumps({"text": "hi"}), "priority": priority},
        )
        assert resp.status_code == 201, resp.text
        assert resp.json()["priority"] == priority and resp.json()["parameters"] == {"text": "hi"}
        ids[priority] = resp.json()["id"]
    rank = lambda o: [j["priority"] for j in editor.get("/api/jobs/", params={"ordering": o}).json()["results"]]  # noqa: E731
    assert rank("priority") == ["low", "normal", "high"]
    assert rank("-priority") == ["high", "normal", "low"]
    assert rank("-priority,-created_at") == ["high", "normal", "low"]
    assert rank("nonsense") == ["normal", "low", "high"]  # the default: newest first

    # the other JSON routes take forms too: create, patch, settings (JSON values), users
    made = editor.post("/api/projects/", data={"name": "From a form", "description": ""})
    assert made.status_code == 201 and made.json()["name"] == "From a form", made.text
    patched = editor.patch(f"/api/projects/{made.json()['id']}/", data={"description": "changed"})
    assert patched.status_code == 200 and patched.json()["description"] == "changed", patched.text
    patched = editor.patch(f"/api/jobs/{ids['low']}/", data={"priority": "high"})
    assert patched.status_code == 200 and patched.json()["priority"] == "high", patched.text
    setting = admin.post("/api/settings/", data={"key": "max_concurrent_jobs", "value": "3"})
    assert setting.status_code == 201 and setting.json()["value"] == 3, setting.text
    user = admin.post("/api/users/", data={"username": "formuser", "password": "f0rm-Passw0rd!", "role": "viewer"})
    assert user.status_code == 201 and user.json()["role"] == "viewer", user.text
    login = httpx.post(f"{platform_up['base']}/api/token/", data={"username": "formuser", "password": "f0rm-Passw0rd!"})
    assert login.status_code == 200 and "access" in login.json()

    # bad forms: problem+json, nothing stored
    bad = editor.post("/api/projects/", data={"description": "no name"})
    assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM
    assert ["body", "name"] in [e["loc"] for e in bad.json()["errors"]]
    garbled = editor.post("/api/projects/", content=b"name=%FF%FE", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert garbled.status_code == 422 and garbled.headers["content-type"] == PROBLEM
    huge = editor.post(
        "/api/projects/",
        content=b"name=x&description=" + b"a" * (1024 * 1024 + 10),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert huge.status_code == 413 and huge.headers["content-type"] == PROBLEM
    assert names(editor.get("/api/projects/", params={"search": "no name"})) == []


def test_absolute_urls_from_the_request_public_url_and_trusted_proxies(platform_up: dict[str, Any], system: Any) -> None:
    stop_processors(platform_up)
    base, editor = platform_up["base"], platform_up["clients"]["editor"]
    token = editor.http.headers["Authorization"]
    job = editor.post(
        "/api/jobs/",
        data={"project": platform_up["project"], "type": "stt", "parameters": "{}"},
        files={"input_file": ("a.wav", tiny_wav(), "audio/wav")},
    )
    assert job.status_code == 201, job.text
    path = f"/api/jobs/{job.json()['id']}/"
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.org"}
    assert editor.post("/api/projects/", json={"name": "another"}).status_code == 201  # two projects: a next page

    def file_url(at: str, **headers: str) -> str:
        resp = httpx.get(f"{at}{path}", headers={"Authorization": token, **headers})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["input_files"]["input_file"]["url"])

    # from the request
    url = file_url(base)
    assert url.startswith(f"{base}/api/jobs/") and "sig=" in url
    assert httpx.get(url).content == tiny_wav()  # the absolute link works as it is

    with serve(system) as plain:  # X-Forwarded-* ignored from a peer that is not a trusted proxy
        assert file_url(plain, **forwarded).startswith(f"{plain}/api/jobs/")
        listed = httpx.get(f"{plain}/api/jobs/", params={"page_size": 1}, headers={"Authorization": token, **forwarded})
        assert listed.json()["results"][0]["input_files"]["input_file"]["url"].startswith(f"{plain}/")

    with serve(system, trusted_proxies="127.0.0.1/32") as trusted:
        assert file_url(trusted, **forwarded).startswith("https://api.example.org/api/jobs/")
        assert file_url(trusted, **{"X-Forwarded-Host": "evil.example/x y"}).startswith(f"{trusted}/")  # not a host
        page = httpx.get(
            f"{trusted}/api/projects/", params={"page_size": 1}, headers={"Authorization": token, **forwarded}
        ).json()
        assert page["next"].startswith("https://api.example.org/api/projects/?")
        result = httpx.get(f"{trusted}/api/jobs/", params={"page_size": 1}, headers={"Authorization": token, **forwarded})
        assert result.json()["results"][0]["input_files"]["input_file"]["url"].startswith("https://api.example.org/")

    with serve(system, public_url="https://aiorch.example.com/base/", trusted_proxies="127.0.0.1") as public:
        assert file_url(public).startswith("https://aiorch.example.com/base/api/jobs/")
        assert file_url(public, **forwarded).startswith("https://aiorch.example.com/base/")  # the public URL wins
        page = httpx.get(f"{public}/api/projects/", params={"page_size": 1}, headers={"Authorization": token}).json()
        assert page["next"].startswith("https://aiorch.example.com/base/api/projects/?")
