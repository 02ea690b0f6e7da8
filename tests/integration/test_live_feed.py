"""The WebSocket feed on real services: authentication, order, resume without gaps or
duplicates, and push after the read model."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from typing import Any

import httpx
import pytest
import websockets

from commands.context import Actor, Context
from commands.messages import StartJob, UpdateProgress
from tests.conftest import wait_until

PROC = Context(Actor("proc-ws", None, "processor"), "run-ws")


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://") + path


async def recv(ws: Any, timeout: float = 10.0) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message.get("type") != "ping":
            return dict(message)


@pytest.fixture
def live(runner: Any, system: Any) -> dict[str, Any]:
    from infra.roles import create_user
    from tests.conftest import Client

    runner.projector()
    base = runner.api()
    for name, role in (("admin", "admin"), ("editor", "editor"), ("other", "editor"), ("viewer", "viewer")):
        create_user(system, name, f"{name}-password", role)
    projector = system.projector()
    wait_until(lambda: projector.position() >= system.platform.head())
    clients = {n: Client(base, n, f"{n}-password") for n in ("admin", "editor", "other", "viewer")}
    project = clients["editor"].post("/api/projects/", json={"name": "live"}).json()["id"]
    return {"base": base, "clients": clients, "project": project}


def token(client: Any) -> str:
    return str(client.http.headers["Authorization"].split()[1])


def test_authentication_and_close_codes(live: dict[str, Any]) -> None:
    base, clients = live["base"], live["clients"]

    async def scenario() -> None:
        async with websockets.connect(ws_url(base, "/ws/jobs/?ticket=nope")) as ws:
            with pytest.raises(websockets.ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 4401
        async with websockets.connect(ws_url(base, "/ws/events/")) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token(clients["editor"])}))
            with pytest.raises(websockets.ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 4403
        ticket = clients["admin"].post("/api/ws-ticket/").json()
        assert ticket["expires_in"] == 30
        async with websockets.connect(ws_url(base, f"/ws/events/?ticket={ticket['ticket']}")) as ws:
            clients["editor"].post("/api/projects/", json={"name": "pushed"})
            message = await recv(ws)
            assert message["type"] == "event" and message["event_type"] == "ProjectCreated"
        async with websockets.connect(ws_url(base, f"/ws/events/?ticket={ticket['ticket']}")) as ws:  # single use
            with pytest.raises(websockets.ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 4401

    asyncio.run(scenario())


def test_push_after_read_model_and_visibility(live: dict[str, Any], system: Any) -> None:
    base, clients = live["base"], live["clients"]
    editor, other = clients["editor"], clients["other"]

    async def scenario() -> None:
        async with websockets.connect(ws_url(base, "/ws/jobs/")) as mine, websockets.connect(ws_url(base, "/ws/jobs/")) as theirs:
            await mine.send(json.dumps({"type": "auth", "token": token(editor)}))
            await theirs.send(json.dumps({"type": "auth", "token": token(other)}))
            await asyncio.sleep(0.3)
            job = await asyncio.to_thread(
                editor.post, "/api/jobs/", json={"project": live["project"], "type": "tts", "parameters": {"text": "ws"}}
            )
            job_id = job.json()["id"]
            await asyncio.to_thread(system.platform.start_job, StartJob(uuid.UUID(job_id), 1, "proc-ws"), PROC)
            for i in range(1, 6):
                await asyncio.to_thread(system.platform.update_progress, UpdateProgress(uuid.UUID(job_id), i * 10, "x"), PROC)
            seen = []
            for _ in range(7):
                message = await recv(mine)
                assert message["job_id"] == job_id
                # immediately after the push, a GET shows at least the pushed state
                got = await asyncio.to_thread(editor.get, f"/api/jobs/{job_id}/")
                assert got.json()["progress"] >= message["job"]["progress"]
                assert message["job"]["status"] == got.json()["status"] or message["event_type"] != "JobStarted"
                seen.append(message)
            assert [m["type"] for m in seen[:2]] == ["job_status_change", "job_status_change"]
            assert all(m["type"] == "job_progress" for m in seen[2:])
            assert [m["job"]["progress"] for m in seen[2:]] == [10, 20, 30, 40, 50]
            positions = [m["position"] for m in seen]
            assert positions == sorted(positions)
            with pytest.raises(TimeoutError):  # another editor sees nothing of it
                await recv(theirs, timeout=1.0)

    asyncio.run(scenario())


def test_random_disconnects_deliver_every_event_exactly_once_in_order(live: dict[str, Any], system: Any) -> None:
    """2,000 events over 50 jobs while a client disconnects at random points and resumes."""
    from commands.messages import SubmitJob

    base, admin = live["base"], live["clients"]["admin"]
    editor_id = live["clients"]["editor"].get("/api/profiles/me/").json()["id"]
    ctx = Context(Actor(editor_id, "editor", "editor"), "load")
    start = system.platform.head()
    project = uuid.UUID(live["project"])
    job_ids = [system.platform.submit_job(SubmitJob(project, "tts", {"text": f"j{i}"}), ctx)[0] for i in range(50)]
    for j in job_ids:
        system.platform.start_job(StartJob(j, 1, "proc-ws"), PROC)
    rng = random.Random(7)
    done = False

    def write_load() -> None:
        nonlocal done
        for step in range(1, 39):  # 50 jobs × 38 progress events + 100 = 2,000 events
            for j in job_ids:
                system.platform.update_progress(UpdateProgress(j, min(step * 2, 100), f"s{step}"), PROC)
        done = True

    async def client() -> list[int]:
        received: list[int] = []
        last = start
        writer = asyncio.create_task(asyncio.to_thread(write_load))
        while True:
            async with websockets.connect(ws_url(base, "/ws/jobs/")) as ws:
                await ws.send(json.dumps({"type": "auth", "token": token(admin), "after": last}))
                budget = rng.randint(20, 300)
                try:
                    for _ in range(budget):
                        message = await recv(ws, timeout=3.0)
                        received.append(message["position"])
                        last = message["position"]
                except TimeoutError:
                    if done:
                        break
            if done and len(received) >= 2000:
                break
        await writer
        return received

    received = asyncio.run(client())
    expected = [n.id for n in system.platform.recorder.select_notifications(start, 5000, inclusive_of_start=False)]
    assert len(expected) == 2000
    assert received == expected, "every event exactly once, in store order"
    assert httpx.get(f"{base}/metrics").status_code == 200
