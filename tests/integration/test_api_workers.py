"""``aiorch api --workers 2``: several uvicorn worker processes on one port share nothing but
PostgreSQL. A session logged out is refused by every worker once the logout has answered, and
a write answered by one worker is read at once through any other (read your writes).

Every request below goes over a new connection, so the kernel hands them to both workers."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.embedded import free_port
from infra.roles import create_user
from tests.conftest import Runner, wait_until
from tests.integration.test_scaleout import Role, role_env

WORKERS = 2
REQUESTS = 50


@pytest.fixture
def api_workers(system: Any, runner: Runner, settings: Any, tmp_path: Path) -> Any:
    """``python -m infra.cli api --workers 2`` on the test's system (the projector in a
    thread of the test); its base URL once every worker answers."""
    runner.projector()
    port = free_port()
    role = Role(["api", "--port", str(port), "--workers", str(WORKERS)], role_env(settings), tmp_path / "api.log")
    base = f"http://127.0.0.1:{port}"

    def workers_up() -> bool:
        assert role.proc.poll() is None, role.log.read_text(errors="replace")
        if role.log.read_text(errors="replace").count("Application startup complete") < WORKERS:
            return False
        try:
            return httpx.get(f"{base}/health/live", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(workers_up, 60, 0.1, "every API worker to start")
    yield base
    role.stop()


def fresh(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request over a connection of its own."""
    with httpx.Client(timeout=30) as http:
        return http.request(method, url, **kwargs)


def login(base: str, system: Any, role: str = "editor") -> dict[str, str]:
    """A new user of ``role`` and a token pair of theirs."""
    name = f"{role[:2]}{uuid.uuid4().hex[:8]}"
    create_user(system, name, f"{name}-password", role)
    resp = fresh("POST", f"{base}/api/token/", json={"username": name, "password": f"{name}-password"})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_workers_share_sessions_and_reads(api_workers: str, system: Any) -> None:
    """One API started for both checks (starting two workers is the slow part)."""
    a_logged_out_session_is_refused_by_every_worker_once_the_logout_answered(api_workers, system)
    a_write_answered_by_one_worker_is_read_at_once_through_any(api_workers, system)


def a_logged_out_session_is_refused_by_every_worker_once_the_logout_answered(api_workers: str, system: Any) -> None:
    base = api_workers
    pair = login(base, system)
    auth = {"Authorization": f"Bearer {pair['access']}"}
    accepted = [fresh("GET", f"{base}/api/projects/", headers=auth).status_code for _ in range(10)]
    assert accepted == [200] * 10

    assert fresh("POST", f"{base}/api/token/logout/", json={"refresh": pair["refresh"]}).status_code == 204
    statuses = [fresh("GET", f"{base}/api/projects/", headers=auth).status_code for _ in range(REQUESTS)]
    assert statuses == [401] * REQUESTS
    # a body-carrying request is refused too (the early check before the body is read)
    refused = fresh("POST", f"{base}/api/projects/", json={"name": "after logout"}, headers=auth)
    assert refused.status_code == 401, refused.text
    assert fresh("POST", f"{base}/api/token/refresh/", json={"refresh": pair["refresh"]}).status_code == 401


def a_write_answered_by_one_worker_is_read_at_once_through_any(api_workers: str, system: Any) -> None:
    base = api_workers
    auth = {"Authorization": f"Bearer {login(base, system)['access']}"}
    reads: list[int] = []
    for i in range(REQUESTS):
        created = fresh("POST", f"{base}/api/projects/", json={"name": f"p{i}"}, headers=auth)
        assert created.status_code == 201, created.text
        project = created.json()["id"]
        read = fresh("GET", f"{base}/api/projects/{project}/", headers=auth)
        waited = fresh(
            "GET",
            f"{base}/api/projects/{project}/",
            headers={**auth, "Aiorch-Min-Position": created.headers["Aiorch-Position"]},
        )
        reads += [read.status_code, waited.status_code]
        assert read.json()["name"] == waited.json()["name"] == f"p{i}"
    assert reads == [200] * (2 * REQUESTS)
