"""The permission matrix: every endpoint × {admin, owner editor, other editor, viewer,
anonymous, deactivated user}, each cell asserted (API.md, *General*)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from commands.context import Actor, Context
from commands.messages import CancelJob, CompleteJob, CreateProject, StartJob, SubmitJob
from infra.roles import create_user
from tests.conftest import SHARED_DATA, wait_until

ACTORS = ("admin", "owner", "other", "viewer", "anonymous", "deactivated")
PROC = Context(Actor("proc-test", None, "processor"), "test-run")


class World:
    """Users, tokens and resources of one matrix run."""

    def __init__(self, system: Any, base: str) -> None:
        self.system, self.base = system, base
        ids = {
            role: create_user(system, name, f"{name}-password", role)
            for name, role in (
                ("admin", "admin"),
                ("owner", "editor"),
                ("other", "editor"),
                ("viewer", "viewer"),
                ("gone", "editor"),
            )
        }
        self.ids = {"admin": ids["admin"], "owner": ids["editor"]}
        self.user_ids = {}
        self.clients: dict[str, httpx.Client] = {}
        self._catch_up()
        for actor, name in (
            ("admin", "admin"),
            ("owner", "owner"),
            ("other", "other"),
            ("viewer", "viewer"),
            ("deactivated", "gone"),
        ):
            client = httpx.Client(base_url=base, timeout=30)
            tokens = client.post("/api/token/", json={"username": name, "password": f"{name}-password"}).json()
            client.headers["Authorization"] = f"Bearer {tokens['access']}"
            self.clients[actor] = client
            self.user_ids[actor] = client.get("/api/profiles/me/").json()["id"]
        self.clients["anonymous"] = httpx.Client(base_url=base, timeout=30)
        assert self.clients["admin"].post(f"/api/users/{self.user_ids['deactivated']}/deactivate/").status_code == 200
        self.owner_ctx = Context(Actor(self.user_ids["owner"], "owner", "editor"), "matrix")
        self.project, _ = system.platform.create_project(CreateProject("Owner's project"), self.owner_ctx)
        self.job = self.pending_job()
        self.done = self.completed_job()
        self._catch_up()

    def _catch_up(self) -> None:
        projector = self.system.projector()
        wait_until(lambda: projector.position() >= self.system.platform.head(), interval=0.01)

    def pending_job(self) -> str:
        job_id, _ = self.system.platform.submit_job(SubmitJob(self.project, "tts", {"text": "hello"}), self.owner_ctx)
        self._catch_up()
        return str(job_id)

    def running_job(self) -> str:
        job_id = self.pending_job()
        self.system.platform.start_job(StartJob(uuid.UUID(job_id), 1, "proc-test"), PROC)
        self._catch_up()
        return job_id

    def cancelled_job(self) -> str:
        job_id = self.pending_job()
        self.system.platform.cancel_job(CancelJob(uuid.UUID(job_id)), self.owner_ctx)
        self._catch_up()
        return job_id

    def completed_job(self) -> str:
        job_id = self.running_job()
        wav = SHARED_DATA / "speech" / "cards-001.wav"
        blob = self.system.blobs.put_file(wav, f"results/{job_id}/1/speech.wav").describe()
        self.system.platform.complete_job(
            CompleteJob(uuid.UUID(job_id), {"files": [blob], "meta": {"duration_seconds": 1.1}}), PROC
        )
        return job_id

    def fresh_user(self) -> str:
        user_id = create_user(self.system, f"u{uuid.uuid4().hex[:8]}", "fresh-password", "viewer")
        self._catch_up()
        return user_id


Cell = tuple[str, str, Callable[[World], Any], Any, tuple[int, ...]]
_counter = itertools.count()


def cells() -> list[Cell]:
    """(method, path(world), body(world), expected statuses in ACTORS order)."""
    ok4 = (200, 200, 200, 200, 401, 401)
    p = lambda f: f  # noqa: E731 - readability of the table below
    return [
        ("GET", "/api/projects/", p(lambda w: "/api/projects/"), None, ok4),
        ("GET", "project", p(lambda w: f"/api/projects/{w.project}/"), None, (200, 200, 404, 200, 401, 401)),
        ("GET", "project jobs", p(lambda w: f"/api/projects/{w.project}/jobs/"), None, (200, 200, 404, 200, 401, 401)),
        ("POST", "/api/projects/", p(lambda w: "/api/projects/"), {"name": "new"}, (201, 201, 201, 403, 401, 401)),
        ("PATCH", "project", p(lambda w: f"/api/projects/{w.project}/"), {"description": "x"}, (200, 200, 404, 403, 401, 401)),
        ("GET", "/api/jobs/", p(lambda w: "/api/jobs/"), None, ok4),
        ("GET", "job", p(lambda w: f"/api/jobs/{w.job}/"), None, (200, 200, 404, 200, 401, 401)),
        ("PATCH", "job", p(lambda w: f"/api/jobs/{w.pending_job()}/"), {"priority": "high"}, (200, 200, 404, 403, 401, 401)),
        (
            "POST",
            "/api/jobs/",
            p(lambda w: "/api/jobs/"),
            lambda w: {"project": str(w.project), "type": "tts", "parameters": {"text": "hi"}},
            (201, 201, 422, 403, 401, 401),
        ),
        ("POST", "cancel", p(lambda w: f"/api/jobs/{w.pending_job()}/cancel/"), None, (202, 202, 404, 403, 401, 401)),
        ("POST", "retry", p(lambda w: f"/api/jobs/{w.cancelled_job()}/retry/"), None, (202, 202, 404, 403, 401, 401)),
        (
            "POST",
            "update_progress",
            p(lambda w: f"/api/jobs/{w.running_job()}/update_progress/"),
            {"progress": 10, "stage": "x", "logs": ["line"]},
            (200, 403, 403, 403, 401, 401),
        ),
        ("DELETE", "job", p(lambda w: f"/api/jobs/{w.pending_job()}/"), None, (204, 204, 404, 403, 401, 401)),
        ("GET", "result", p(lambda w: f"/api/jobs/{w.done}/result/"), None, (200, 200, 404, 200, 401, 401)),
        ("GET", "logs", p(lambda w: f"/api/jobs/{w.done}/logs/"), None, (200, 200, 404, 200, 401, 401)),
        ("GET", "download", p(lambda w: f"/api/jobs/{w.done}/result/files/0/"), None, (200, 200, 404, 200, 401, 401)),
        ("GET", "/api/job-results/", p(lambda w: "/api/job-results/"), None, ok4),
        ("GET", "job-result", p(lambda w: f"/api/job-results/{w.done}/"), None, (200, 200, 404, 200, 401, 401)),
        ("GET", "job_details", p(lambda w: f"/api/job-results/{w.done}/job_details/"), None, (200, 200, 404, 200, 401, 401)),
        ("GET", "/api/users/", p(lambda w: "/api/users/"), None, (200, 403, 403, 403, 401, 401)),
        (
            "POST",
            "/api/users/",
            p(lambda w: "/api/users/"),
            lambda w: {"username": f"n{next(_counter)}x{uuid.uuid4().hex[:6]}", "password": "long-enough", "role": "viewer"},
            (201, 403, 403, 403, 401, 401),
        ),
        ("GET", "user", p(lambda w: f"/api/users/{w.user_ids['owner']}/"), None, (200, 403, 403, 403, 401, 401)),
        ("POST", "deactivate", p(lambda w: f"/api/users/{w.fresh_user()}/deactivate/"), None, (200, 403, 403, 403, 401, 401)),
        (
            "POST",
            "user password",
            p(lambda w: f"/api/users/{w.fresh_user()}/password/"),
            {"new_password": "another-one"},
            (204, 403, 403, 403, 401, 401),
        ),
        ("GET", "/api/profiles/", p(lambda w: "/api/profiles/"), None, ok4),
        ("GET", "/api/profiles/me/", p(lambda w: "/api/profiles/me/"), None, ok4),
        ("GET", "owner profile", p(lambda w: f"/api/profiles/{w.user_ids['owner']}/"), None, (200, 200, 404, 404, 401, 401)),
        ("GET", "/api/settings/", p(lambda w: "/api/settings/"), None, ok4),
        ("GET", "/api/settings/effective/", p(lambda w: "/api/settings/effective/"), None, ok4),
        (
            "POST",
            "global setting",
            p(lambda w: "/api/settings/"),
            {"key": "default_language", "value": "en"},
            (201, 403, 403, 403, 401, 401),
        ),
        ("GET", "/api/agents/", p(lambda w: "/api/agents/"), None, ok4),
        (
            "POST",
            "/api/agents/",
            p(lambda w: "/api/agents/"),
            {"name": "a", "type": "tts", "configuration": {"language": "en"}},
            (201, 201, 201, 403, 401, 401),
        ),
        ("GET", "/api/providers/", p(lambda w: "/api/providers/"), None, (200, 403, 403, 403, 401, 401)),
        (
            "POST",
            "/api/providers/",
            p(lambda w: "/api/providers/"),
            {"name": "p", "kind": "local"},
            (201, 403, 403, 403, 401, 401),
        ),
        ("GET", "/api/engines/", p(lambda w: "/api/engines/"), None, ok4),
    ]


@pytest.fixture
def world(runner: Any, system: Any) -> World:
    runner.projector()
    return World(system, runner.api())


def test_permission_matrix(world: World) -> None:
    failures = []
    for method, name, path, body, expected in cells():
        for actor, status in zip(ACTORS, expected, strict=True):
            url = path(world)
            payload = body(world) if callable(body) else body
            resp = world.clients[actor].request(method, url, json=payload)
            if resp.status_code != status:
                failures.append(f"{method} {name} as {actor}: {resp.status_code} (wanted {status}) {resp.text[:150]}")
            elif status >= 400:
                assert resp.headers["content-type"].startswith("application/problem+json"), (method, name, actor)
    assert not failures, "\n".join(failures)


def test_lists_show_only_visible_rows(world: World) -> None:
    def ids(actor: str, path: str) -> set[str]:
        return {r["id"] for r in world.clients[actor].get(path, params={"page_size": 500}).json()["results"]}

    project, job = str(world.project), world.job
    for actor, sees in (("admin", True), ("owner", True), ("other", False), ("viewer", True)):
        assert (project in ids(actor, "/api/projects/")) is sees, actor
        assert (job in ids(actor, "/api/jobs/")) is sees, actor
        assert (world.done in ids(actor, "/api/job-results/")) is sees, actor
    assert ids("viewer", "/api/profiles/") == {world.user_ids["viewer"]}
    assert len(ids("admin", "/api/profiles/")) >= 5
