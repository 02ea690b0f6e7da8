"""The WebSocket feed sends what ``/openapi.json`` documents: real messages of every kind
(``job_status_change``, ``job_update``, ``job_progress`` on ``/ws/jobs/`` and
``/ws/jobs/{id}/``, ``event`` on ``/ws/events/``, ``ping``, ``resync_required``) validated
against the ``components.schemas`` of the running API's document (``WsJobMessage``,
``WsEventMessage``, ``WsPing``, ``WsResyncRequired`` and their union ``WsServerMessage``),
and the feeds are described in its ``x-websocket``.

The API runs in this process: the ping interval is shortened (``api.routers.live.PING_S``)
and the hub's per-connection queue made one message long to make a client fall behind."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
import websockets
from jsonschema import Draft202012Validator

from commands.context import Actor, Context, acting_as
from commands.job import Job
from commands.messages import StartJob, UpdateProgress
from tests.conftest import wait_until

PROC = Context(Actor("proc-ws-schemas", None, "processor"), "run-ws-schemas")
KINDS = {"job_status_change", "job_update", "job_progress", "event", "ping", "resync_required"}
COMPONENT = {
    "job_status_change": "WsJobMessage",
    "job_update": "WsJobMessage",
    "job_progress": "WsJobMessage",
    "event": "WsEventMessage",
    "ping": "WsPing",
    "resync_required": "WsResyncRequired",
}


@pytest.fixture
def live(runner: Any, system: Any) -> dict[str, Any]:
    """The projector and the API (no processor: the test moves its job itself)."""
    from infra.roles import create_user
    from tests.conftest import Client

    runner.projector()
    base = runner.api()
    for name, role in (("admin", "admin"), ("editor", "editor")):
        create_user(system, name, f"{name}-password", role)
    projector = system.projector()
    wait_until(lambda: projector.position() >= system.platform.head())
    clients = {n: Client(base, n, f"{n}-password") for n in ("admin", "editor")}
    project = clients["editor"].post("/api/projects/", json={"name": "ws schemas"}).json()["id"]
    hub = runner._server.config.app.state.services.hub
    return {"base": base, "clients": clients, "project": project, "hub": hub}


def validator(spec: dict[str, Any], name: str) -> Draft202012Validator:
    """A validator of ``components.schemas[name]`` (its references resolved in ``spec``)."""
    return Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": spec["components"]},
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://") + path


def token(client: Any) -> str:
    return str(client.http.headers["Authorization"].split()[1])


async def collect(ws: Any, until: set[str], into: list[dict[str, Any]], timeout: float = 20.0) -> None:
    """Receive into ``into`` until every kind in ``until`` was seen."""
    seen: set[str] = set()
    while not until <= seen:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        into.append(message)
        seen.add(message["type"])


def test_the_feed_sends_what_the_document_describes(live: dict[str, Any], system: Any, monkeypatch: Any) -> None:
    import api.routers.live

    monkeypatch.setattr(api.routers.live, "PING_S", 0.3)
    base, admin, editor = live["base"], live["clients"]["admin"], live["clients"]["editor"]
    spec = httpx.get(f"{base}/openapi.json", timeout=30).json()
    feeds = spec["x-websocket"]["feeds"]
    assert set(feeds) == {"/ws/jobs/{job_id}/", "/ws/jobs/", "/ws/events/"}
    assert spec["x-websocket"]["client_messages"] == [{"$ref": "#/components/schemas/WsAuth"}]
    for name in ("WsAuth", "WsJobMessage", "WsEventMessage", "WsPing", "WsResyncRequired", "WsServerMessage"):
        assert name in spec["components"]["schemas"], name
    received: list[dict[str, Any]] = []

    async def scenario() -> None:
        ticket = admin.post("/api/ws-ticket/").json()["ticket"]
        auth = {"type": "auth", "token": token(editor), "after": 0}
        assert not list(validator(spec, "WsAuth").iter_errors(auth))
        async with (
            websockets.connect(ws_url(base, f"/ws/events/?ticket={ticket}")) as events,
            websockets.connect(ws_url(base, "/ws/jobs/")) as jobs,
        ):
            await jobs.send(json.dumps(auth))
            await asyncio.sleep(0.3)
            submitted = await asyncio.to_thread(
                editor.post, "/api/jobs/", json={"project": live["project"], "type": "tts", "parameters": {"text": "Hi."}}
            )
            job_id = submitted.json()["id"]
            await asyncio.to_thread(editor.patch, f"/api/jobs/{job_id}/", json={"parameters": {"text": "Hello."}})
            await asyncio.to_thread(system.platform.start_job, StartJob(uuid.UUID(job_id), 2, PROC.actor.id), PROC)
            await asyncio.to_thread(system.platform.update_progress, UpdateProgress(uuid.UUID(job_id), 10, "x"), PROC)
            await collect(jobs, {"job_status_change", "job_update", "job_progress", "ping"}, received)
            await collect(events, {"event", "ping"}, received)
        received.extend(await fall_behind(live, system, job_id))

    asyncio.run(scenario())
    assert {m["type"] for m in received} == KINDS
    union = validator(spec, "WsServerMessage")
    for message in received:
        errors = [e.message for e in validator(spec, COMPONENT[message["type"]]).iter_errors(message)]
        errors += [e.message for e in union.iter_errors(message)]
        assert not errors, (message, errors)


async def fall_behind(live: dict[str, Any], system: Any, job_id: str) -> list[dict[str, Any]]:
    """Messages of a ``/ws/jobs/{id}/`` connection whose queue holds one message, sent a
    burst of events stored in one transaction, until it is told ``resync_required``
    (a few bursts at most)."""
    hub, editor = live["hub"], live["clients"]["editor"]
    size, hub.queue_size = hub.queue_size, 1
    try:
        ticket = editor.post("/api/ws-ticket/").json()["ticket"]
        got: list[dict[str, Any]] = []
        async with websockets.connect(ws_url(live["base"], f"/ws/jobs/{job_id}/?ticket={ticket}")) as ws:
            await asyncio.sleep(0.3)
            for _ in range(5):

                def burst() -> None:  # 200 events stored in one transaction
                    with acting_as(PROC):
                        job = system.platform._load(Job, job_id, "job")
                        for i in range(200):
                            job.report_progress(50, f"burst {i}")
                        system.platform._save(job)

                await asyncio.to_thread(burst)
                try:
                    while True:
                        message = json.loads(await asyncio.wait_for(ws.recv(), 20))
                        got.append(message)
                        if message["type"] == "resync_required":
                            with pytest.raises(websockets.ConnectionClosed) as closed:
                                await asyncio.wait_for(ws.recv(), 20)
                            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
                            return got
                        if message["type"] == "job_progress" and message["job"]["stage"] == "burst 199":
                            break  # this burst was delivered whole: another one
                except websockets.ConnectionClosed:
                    pytest.fail(f"closed without resync_required after {len(got)} messages")
        pytest.fail("five bursts of 200 events never outran a one-message queue")
    finally:
        hub.queue_size = size
