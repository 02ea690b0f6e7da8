"""Hostile input against reads-your-writes and the live feed (issue 13, findings 5, 9, 10, 11):
``min_position`` beyond the head, waits that hold no thread, revocation of open
connections, the per-user cap and malformed resume positions — on the real system."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from typing import Any

import httpx
import websockets

from commands.context import Actor, Context
from commands.messages import CreateProject
from tests.conftest import wait_until

CLOSE_TIMEOUT_S = 10.0  # "within a few seconds": generous under a loaded machine


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://") + path


def bearer(client: Any) -> str:
    return str(client.http.headers["Authorization"].split()[1])


async def closed_code(ws: Any, timeout: float = CLOSE_TIMEOUT_S) -> int:
    """Read (skipping pings and messages) until the server closes; its close code."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await ws.recv()
            except websockets.ConnectionClosed as closed:
                received = closed.rcvd
                break
    assert received is not None, "closed without a close frame (1006)"
    return int(received.code)


async def open_feed(base: str, token: str, path: str = "/ws/jobs/", after: int | None = None) -> Any:
    ws = await websockets.connect(ws_url(base, path))
    await ws.send(json.dumps({"type": "auth", "token": token, **({"after": after} if after is not None else {})}))
    return ws


async def served(ws: Any) -> dict[str, Any]:
    """The first message (not a ping) of an open feed: it was authenticated and registered."""
    async with asyncio.timeout(CLOSE_TIMEOUT_S):
        while True:
            message = json.loads(await ws.recv())
            if message.get("type") != "ping":
                return dict(message)


async def wait_for_place(base: str, token: str, after: int) -> Any:
    """A feed opened once the server has counted a closed one out (closing is asynchronous)."""
    async with asyncio.timeout(CLOSE_TIMEOUT_S):
        while True:
            ws = await open_feed(base, token, after=after)
            try:
                await served(ws)
            except websockets.ConnectionClosed:
                continue
            return ws


def api_services(platform_up: dict[str, Any]) -> Any:
    return platform_up["runner"]._server.config.app.state.services


def test_min_position_beyond_head_and_waits_hold_no_thread(platform_up: dict[str, Any], system: Any) -> None:
    base, clients, runner = platform_up["base"], platform_up["clients"], platform_up["runner"]
    viewer, editor = clients["viewer"], clients["editor"]
    head = system.platform.head()

    # beyond the head: 409 at once, naming the head; huge values never 500
    for params, headers in (
        ({"min_position": head + 1000}, {}),
        ({}, {"Aiorch-Min-Position": str(head + 1000)}),
        ({"min_position": 2**63 + 5}, {}),
        ({"min_position": 2**64}, {}),
    ):
        resp = viewer.get("/api/projects/", params=params, headers=headers)
        assert resp.status_code == 409, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert str(head) in resp.json()["detail"]
    resp = viewer.get("/api/projects/", params={"min_position": "9" * 5000})
    assert resp.status_code in (409, 422) and resp.headers["content-type"].startswith("application/problem+json")
    assert viewer.get("/api/projects/", params={"min_position": head}).status_code == 200

    # a position written by another process (here: straight through the commands) is never refused
    _, written = system.platform.create_project(CreateProject("elsewhere", ""), Context(Actor("x", "admin", "admin"), "c"))
    assert viewer.get("/api/projects/", params={"min_position": written}).status_code == 200

    # with the projector stopped, 30 reads wait on a position the read models have not reached
    projector = next(role for role, _ in runner.threads if type(role).__name__ == "Projector")
    runner.stop(projector)
    _, pending_at = system.platform.create_project(CreateProject("unseen", ""), Context(Actor("x", "admin", "admin"), "c"))
    reads = api_services(platform_up).reads

    async def scenario() -> None:
        auth = {"Authorization": viewer.http.headers["Authorization"]}
        async with (
            httpx.AsyncClient(base_url=base, headers=auth, timeout=60) as waiting,
            httpx.AsyncClient(base_url=base, headers={"Authorization": editor.http.headers["Authorization"]}, timeout=60) as ed,
        ):
            waits = [asyncio.create_task(waiting.get("/api/projects/", params={"min_position": pending_at})) for _ in range(30)]
            await asyncio.to_thread(wait_until, lambda: len(reads._waiters) >= 30, 30, 0.02, "30 waiting reads")
            # an unrelated read answers while every wait is still pending
            listed = await ed.get("/api/projects/")
            assert listed.status_code == 200 and not any(w.done() for w in waits)
            # and so does a create: its command runs (the event is stored) while they pend
            create = asyncio.create_task(ed.post("/api/projects/", json={"name": "while waiting"}))
            await asyncio.to_thread(wait_until, lambda: system.platform.head() > pending_at, 30, 0.02, "the create")
            assert not any(w.done() for w in waits)
            # the projector back: its NOTIFY wakes every wait, and the create answers 201 as before
            await asyncio.to_thread(runner.projector)
            created = await create
            assert created.status_code == 201 and created.json()["name"] == "while waiting"
            assert int(created.headers["Aiorch-Position"]) > pending_at
            answers = await asyncio.gather(*waits)
            assert [a.status_code for a in answers] == [200] * 30
            assert any(p["name"] == "unseen" for p in answers[0].json()["results"])

    asyncio.run(scenario())


def test_live_connections_capped_resume_checked_and_revoked(platform_up: dict[str, Any], system: Any) -> None:
    """The per-user cap (4429 / SSE 429), bad ``after`` (4401) and ``as_of`` (422); then open
    connections closed (4401) on logout, expiry, password change and deactivation."""
    base, clients = platform_up["base"], platform_up["clients"]
    admin, editor, viewer = clients["admin"], clients["editor"], clients["viewer"]
    pair = httpx.post(f"{base}/api/token/", json={"username": "editor", "password": "editor-password"}).json()
    ticket = httpx.post(f"{base}/api/ws-ticket/", headers={"Authorization": f"Bearer {pair['access']}"}).json()["ticket"]
    runner = platform_up["runner"]
    for role, _thread in list(runner.threads):  # no processor: the job stays pending, its stream open
        if type(role).__name__ == "Processor":
            runner.stop(role)
    before = system.platform.head()
    job_id = editor.post(
        "/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {"text": "x"}}
    ).json()["id"]
    token = bearer(viewer)

    async def capped() -> None:
        feeds = [await open_feed(base, token, after=before) for _ in range(20)]
        for ws in feeds:  # each replays the job's submission: authenticated and counted
            assert (await served(ws))["job_id"] == job_id
        extra = await open_feed(base, token, after=before)
        assert await closed_code(extra) == 4429
        sse = await asyncio.to_thread(viewer.get, f"/api/jobs/{job_id}/events/", headers={"Accept": "text/event-stream"})
        assert sse.status_code == 429 and sse.headers["content-type"].startswith("application/problem+json")
        other = await open_feed(base, bearer(editor), after=before)  # the cap is per user
        assert (await served(other))["job_id"] == job_id
        await feeds.pop().close()
        again = await wait_for_place(base, token, before)  # a closed connection frees its place
        for ws in [*feeds, again, other]:
            await ws.close()

        # a resume position that is not a non-negative integer is bad auth (4401), never 1006
        for after in ([], {}, -1, "x", True, 2**64, "9" * 5000, 1.5):
            ws = await websockets.connect(ws_url(base, "/ws/jobs/"))
            await ws.send(json.dumps({"type": "auth", "token": token, "after": after}))
            assert await closed_code(ws) == 4401, after
        for query in ("after=x", "after=-1", "after=%C2%B2", "after=" + "9" * 5000):
            ws = await websockets.connect(ws_url(base, f"/ws/jobs/?{query}"))
            with contextlib.suppress(websockets.ConnectionClosed):  # it may close before reading
                await ws.send(json.dumps({"type": "auth", "token": token}))
            assert await closed_code(ws) == 4401, query
        ws = await websockets.connect(ws_url(base, "/ws/jobs/"))
        await ws.send(b"\x00\xff")
        assert await closed_code(ws) == 4401

    asyncio.run(capped())

    for as_of in ("²", "9" * 5000, "yesterday", "2026-01-01T00:00:00" + "0" * 100, "١٢"):
        resp = viewer.get(f"/api/jobs/{job_id}/", params={"as_of": as_of})
        assert resp.status_code == 422, (as_of, resp.status_code, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
    assert viewer.get(f"/api/jobs/{job_id}/", params={"as_of": system.platform.head()}).status_code == 200

    async def scenario() -> None:
        # three feeds of the editor, each served (the job's submission replayed) before the logout
        by_ticket = await websockets.connect(ws_url(base, f"/ws/jobs/?ticket={ticket}&after={before}"))
        by_message = await open_feed(base, pair["access"], after=before)
        other_session = await open_feed(base, bearer(editor), after=before)
        for ws in (by_ticket, by_message, other_session):
            assert (await served(ws))["job_id"] == job_id
        resp = await asyncio.to_thread(httpx.post, f"{base}/api/token/logout/", json={"refresh": pair["refresh"]})
        assert resp.status_code == 204
        assert await closed_code(by_ticket) == 4401
        assert await closed_code(by_message) == 4401
        await asyncio.wait_for(await other_session.ping(), CLOSE_TIMEOUT_S)  # another session stays open
        await other_session.close()

        # a token that expires closes its connection
        short = dataclasses.replace(api_services(platform_up).tokens, access_ttl_s=3)
        brief = short.pair({"id": platform_up["users"]["editor"], "username": "editor", "role": "editor"})["access"]
        expiring = await open_feed(base, brief, after=before)
        assert (await served(expiring))["job_id"] == job_id
        assert await closed_code(expiring) == 4401

        # a password change closes the user's other sessions, not the one that changed it
        other_pair = await asyncio.to_thread(
            lambda: httpx.post(f"{base}/api/token/", json={"username": "editor", "password": "editor-password"}).json()
        )
        kept = await open_feed(base, bearer(editor), after=before)
        dropped = await open_feed(base, other_pair["access"], after=before)
        for ws in (kept, dropped):
            assert (await served(ws))["job_id"] == job_id
        resp = await asyncio.to_thread(
            editor.post, "/api/profiles/me/password/", json={"old_password": "editor-password", "new_password": "n3w-Passw0rd!x"}
        )
        assert resp.status_code == 204, resp.text
        assert await closed_code(dropped) == 4401
        await asyncio.wait_for(await kept.ping(), CLOSE_TIMEOUT_S)
        await kept.close()

        # deactivation closes the viewer's WebSocket and ends its SSE stream
        viewer_ws = await open_feed(base, bearer(viewer), after=before)
        assert (await served(viewer_ws))["job_id"] == job_id
        auth = {"Authorization": viewer.http.headers["Authorization"]}
        async with (
            httpx.AsyncClient(base_url=base, headers=auth) as http,
            http.stream("GET", f"/api/jobs/{job_id}/events/", headers={"Accept": "text/event-stream"}, timeout=60) as stream,
        ):
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith("id: ")
            resp = await asyncio.to_thread(admin.post, f"/api/users/{platform_up['users']['viewer']}/deactivate/")
            assert resp.status_code == 200, resp.text
            assert await closed_code(viewer_ws) == 4401

            async def drain() -> None:
                async for _ in lines:
                    pass

            await asyncio.wait_for(drain(), CLOSE_TIMEOUT_S)  # the stream ended

    asyncio.run(scenario())


def test_hub_skips_an_event_it_cannot_decode(system: Any) -> None:
    """Invariant 11: an undecodable event in the store is logged and skipped; the next is pushed."""
    import uuid

    import psycopg

    from api.live import Feed, LiveHub, Subscriber
    from infra.db import conninfo

    hub = LiveHub(
        system.platform.recorder,
        system.platform.mapper.to_domain_event,
        system.engine,
        lambda: 2**62,  # no projector here: the hub pushes at once
        system.store_waiter().wait,
    )

    async def scenario() -> None:
        sub = Subscriber(Feed("events", {"id": "admin", "role": "admin"}), asyncio.get_running_loop(), asyncio.Queue())
        hub.subscribe(sub)
        with psycopg.connect(conninfo(system.database_url), autocommit=True) as conn:
            conn.execute(
                f'INSERT INTO "{system.platform.recorder.events_table_name}" '
                "(originator_id, originator_version, topic, state) VALUES (%s, 1, %s, %s)",
                (uuid.uuid4(), "events.nowhere:Nothing", b"\x00not json"),
            )
        _, position = system.platform.create_project(
            CreateProject("after the poison", ""), Context(Actor("x", "a", "admin"), "c")
        )
        message = await asyncio.wait_for(sub.queue.get(), 30)
        assert message is not None and message["position"] == position and message["event_type"] == "ProjectCreated"

    try:
        asyncio.run(scenario())
    finally:
        hub.stop()
