"""Issue 13, findings 8, 10 and 11 (headers): hostile parameters and bodies answer 4xx
problem+json, an unhandled exception answers 500 problem+json with the request id, every
answer carries the security headers, and anonymous requests to made-up paths grow neither
the metrics nor the audit log — against the real system (PostgreSQL, broker, API over HTTP)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select

from api.audit import audit_log
from api.headers import DOCS_CSP
from projections.history import StoreHistory
from tests.conftest import wait_until

PROBLEM = "application/problem+json"
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
}
#: one of each kind a parameter should survive: NUL, another C0 control, an integer beyond
#: int64, a negative number, something that is not an id
HOSTILE = ("a%00b", "%01", "99999999999999999999", "-1", "not-a-uuid")


def assert_problem(resp: httpx.Response, status: int | tuple[int, ...], loc: list[str] | None = None) -> dict[str, Any]:
    """``resp`` is problem+json with ``status``, ``instance`` = ``X-Request-ID`` and, when
    given, an error at ``loc``."""
    statuses = (status,) if isinstance(status, int) else status
    assert resp.status_code in statuses, (resp.request.url, resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith(PROBLEM), (resp.request.url, resp.headers["content-type"])
    body: dict[str, Any] = resp.json()
    assert body["status"] == resp.status_code and body["instance"] == resp.headers["x-request-id"]
    if loc is not None:
        assert loc in [e["loc"] for e in body.get("errors", [])], body
    return body


def routes_of(system: Any) -> list[APIRoute]:
    """Every API route of the app (the routers' own routes: included routers nest them)."""
    from infra.roles import api_app

    found: list[APIRoute] = []
    for entry in api_app(system).routes:
        for route in getattr(getattr(entry, "original_router", None), "routes", [entry]):
            if isinstance(route, APIRoute):
                found.append(route)
    return found


def query_names(dependant: Any) -> list[str]:
    """The query parameters of a route, its dependencies' included."""
    names = [p.alias for p in dependant.query_params]
    for sub in dependant.dependencies:
        names += query_names(sub)
    return list(dict.fromkeys(names))


def test_hostile_input_answers_4xx_and_a_crash_500_problem_json(
    platform_up: dict[str, Any], system: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin, editor = platform_up["clients"]["admin"], platform_up["clients"]["editor"]
    project = platform_up["project"]
    job = editor.post("/api/jobs/", json={"project": project, "type": "tts", "parameters": {"text": "hostile"}}).json()
    job_id = job["id"]

    # NUL and other controls in every filter → 422 naming the parameter, before any query runs
    for client, path, name, value in (
        (editor, "/api/projects/", "search", "a\x00b"),
        (editor, "/api/projects/", "owner", "\x00"),
        (editor, "/api/jobs/", "type", "tts\x00"),
        (editor, "/api/job-results/", "type", "\x00"),
        (editor, "/api/agents/", "type", "\x1f"),
        (editor, "/api/settings/", "key", "max\x00"),
        (admin, "/api/users/", "search", "\x00"),
        (admin, "/api/audit/", "actor", "\x00"),
        (admin, "/api/audit/", "command", "Submit\x07Job"),
        (admin, "/api/dead-letters/", "type", "\x7f"),
    ):
        assert_problem(client.get(path, params={name: value}), 422, ["query", name])
    # …and in a path parameter that is a free string
    assert_problem(editor.get(f"/api/jobs/{job_id}/files/input%00file/"), 422, ["path", "field"])

    # a page beyond any offset PostgreSQL takes, on every list → 404 "Invalid page." before
    # any offset is computed, as DRF answers every page past the end (API.md: DRF's pagination)
    routes = routes_of(system)
    lists = [r.path for r in routes if "GET" in r.methods and "page" in query_names(r.dependant)]
    assert len(lists) >= 12, lists
    hook = admin.post(  # disabled: nothing is ever sent to it
        "/api/webhooks/", json={"url": "https://hooks.example.com/in", "events": ["job.completed"], "enabled": False}
    )
    assert hook.status_code == 201, hook.text
    webhook_id = hook.json()["id"]
    for path in lists:
        path = path.replace("{job_id}", job_id).replace("{project_id}", project).replace("{webhook_id}", webhook_id)
        for far in ("99999999999999999999", str(2**63), "1000000000"):
            assert assert_problem(admin.get(path, params={"page": far}), 404)["detail"] == "Invalid page.", (path, far)

    # a position beyond int64 in logs/?after=
    assert_problem(editor.get(f"/api/jobs/{job_id}/logs/", params={"after": 2**63}), 422, ["query", "after"])

    # deeply nested JSON (RecursionError in the parser) → 422, nothing stored
    with system.engine.connect() as conn:
        audited_before = conn.execute(select(func.count()).select_from(audit_log)).scalar_one()
    deep = b"[" * 100_000 + b"]" * 100_000
    assert_problem(editor.post("/api/jobs/", content=deep, headers={"content-type": "application/json"}), 422, ["body"])
    nested = '{"a":' * 990 + "1" + "}" * 990
    body = f'{{"project": "{project}", "type": "tts", "parameters": {{"text": "x", "extra": {nested}}}}}'
    assert_problem(editor.post("/api/jobs/", content=body, headers={"content-type": "application/json"}), 422)
    multipart = {"project": (None, project), "type": (None, "tts"), "parameters": (None, deep.decode())}
    assert_problem(editor.post("/api/jobs/", files=multipart), 422, ["body", "parameters"])
    assert_problem(editor.post("/api/projects/", content=deep, headers={"content-type": "application/json"}), (400, 422))
    assert editor.get("/api/jobs/").json()["count"] == 1
    with system.engine.connect() as conn:  # the refusals are audited, as refused commands are
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar_one() >= audited_before + 4

    # every query and path parameter of every route, once with each hostile value: never a
    # 5xx, every error problem+json (positions beyond the head are another finding's)
    ids = {"job_id": job_id, "result_id": job_id, "project_id": project, "user_id": platform_up["users"]["admin"]}
    for route in routes:
        methods = route.methods & {"GET", "POST", "PUT", "PATCH", "DELETE"}
        paths = {name.name: ids.get(name.name, "0") for name in route.dependant.path_params}
        for method in sorted(methods):
            cases: list[tuple[dict[str, str], dict[str, str]]] = [
                ({**paths, name: value}, {}) for name in paths for value in HOSTILE
            ]
            if method == "GET":
                cases += [
                    (paths, {name: value})
                    for name in query_names(route.dependant)
                    for value in HOSTILE
                    if not (name == "min_position" and value.isdigit())
                ]
            for path_values, query in cases:
                url = route.path
                for name, value in path_values.items():
                    url = url.replace("{" + name + "}", value)
                qs = "&".join(f"{k}={v}" for k, v in query.items())
                resp = admin.request(method, f"{url}?{qs}" if qs else url, json={} if method != "GET" else None)
                assert resp.status_code < 500, (method, url, query, resp.status_code, resp.text[:300])
                if resp.status_code >= 400:
                    assert_problem(resp, resp.status_code)

    # an exception no handler takes → 500 problem+json with the request id, never plain text
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("secret internals /etc/aiorch")

    monkeypatch.setattr(StoreHistory, "count", broken)  # a part breaks under a read…
    monkeypatch.setattr(StoreHistory, "page", broken)
    monkeypatch.setattr(system.platform, "retry_job", broken)  # …and under a command
    rid = f"boom-{uuid.uuid4()}"
    resp = editor.get(f"/api/jobs/{job_id}/history/", headers={"X-Request-ID": rid})
    body = assert_problem(resp, 500)
    assert body["instance"] == rid and resp.headers["x-request-id"] == rid
    assert "secret" not in resp.text and "RuntimeError" not in resp.text
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers[name] == value
    # a generated id when none, or an unacceptable one, is sent
    resp = editor.get(f"/api/jobs/{job_id}/events/", headers={"X-Request-ID": "x" * 201})
    assert uuid.UUID(assert_problem(resp, 500)["instance"])

    # the failed command is answered the same way and still audited, with status 500
    rid = f"boom-{uuid.uuid4()}"
    assert_problem(admin.post(f"/api/jobs/{job_id}/retry/", headers={"X-Request-ID": rid}), 500)
    with system.engine.connect() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.request_id == rid)).mappings().one()
    assert (row["command"], row["status"], row["outcome"], row["actor_username"]) == ("RetryJob", 500, "error", "admin")
    # the server keeps serving
    assert editor.get(f"/api/jobs/{job_id}/").status_code == 200


def series(metrics_text: str) -> set[str]:
    """The series (name and labels, value left out) of a Prometheus text answer."""
    return {line.rsplit(" ", 1)[0] for line in metrics_text.splitlines() if line and not line.startswith("#")}


def test_unknown_paths_grow_no_state_but_real_commands_are_audited(platform_up: dict[str, Any], system: Any) -> None:
    base = platform_up["base"]
    viewer, admin = platform_up["clients"]["viewer"], platform_up["clients"]["admin"]
    anonymous = httpx.Client(base_url=base, timeout=30)

    def audit_rows() -> int:
        with system.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(audit_log)).scalar_one())

    # security headers on a few kinds of answer: JSON, problem+json, HTML docs, metrics
    for resp in (
        anonymous.get("/health/live"),
        anonymous.get("/api/projects/"),
        anonymous.get("/docs"),
        viewer.get("/api/jobs/"),
    ):
        expected = dict(SECURITY_HEADERS)
        if resp.request.url.path == "/docs":  # the docs pages' fuller policy: nothing but the app's own
            expected["content-security-policy"] = DOCS_CSP
            assert "frame-ancestors 'none'" in DOCS_CSP and "default-src 'self'" in DOCS_CSP
        for name, value in expected.items():
            assert resp.headers[name] == value, (resp.request.url, name)
        assert "strict-transport-security" not in resp.headers  # AIORCH_PUBLIC_URL is not https here

    # warm up the fixed series: /metrics itself, "unmatched" and a method a route does not take
    anonymous.get("/metrics")
    assert_problem(anonymous.post("/api/warm-up/", json={}), 404)
    assert_problem(anonymous.request("DELETE", "/api/warm-up/"), 404)
    assert_problem(anonymous.request("PATCH", "/api/engines/"), 405)
    before_series, before_rows = series(anonymous.get("/metrics").text), audit_rows()
    for i in range(50):
        path = f"/api/nope-{uuid.uuid4().hex}/{i}/"
        assert_problem(anonymous.post(path, json={"x": i}), 404)
        assert_problem(anonymous.request("DELETE", f"/api/jobs/{i}/x/"), 404)
        assert_problem(anonymous.request("PATCH", "/api/engines/"), 405)  # a route, but not a command
    after = anonymous.get("/metrics").text
    assert series(after) == before_series
    assert "nope-" not in after
    assert 'aiorch_http_requests_total{method="POST",route="unmatched",status="404"}' in after
    assert audit_rows() == before_rows

    # real command attempts are still audited, refused ones included (anonymous too)
    assert_problem(viewer.post("/api/projects/", json={"name": "not mine to make"}), 403)
    assert_problem(anonymous.post("/api/projects/", json={"name": "anonymous"}), 401)
    assert audit_rows() == before_rows + 2

    def refused() -> list[dict[str, Any]]:
        rows = admin.get("/api/audit/", params={"command": "CreateProject", "outcome": "refused"}).json()["results"]
        return list(rows) if len(rows) >= 2 else []

    rows = wait_until(refused, 30, message="the refused creates in the audit log")
    assert {(r["actor"]["username"], r["status"]) for r in rows} >= {("viewer", 403), (None, 401)}
    assert 'aiorch_commands_total{command="CreateProject",outcome="refused"}' in anonymous.get("/metrics").text
