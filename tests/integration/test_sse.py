"""Server-sent events a browser's ``EventSource`` can use (issue 12, API.md *Jobs*): unnamed
events (``id:`` the position, ``data:`` the history item), ``?ticket=`` from
``POST /api/sse-ticket/`` instead of an ``Authorization`` header (bound to one job's stream,
reusable for its reconnects), served live from the hub, closed at once when resumed at a
finished job's end and when the session is revoked."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tests.integration.test_drf_compat import stop_processors

PROBLEM = "application/problem+json"
SSE = {"Accept": "text/event-stream"}
CLOSE_TIMEOUT_S = 20.0


def frames(body: str) -> list[dict[str, Any]]:
    """The events of a stream body: ``{id, data, fields}`` (``fields``: the field names)."""
    out = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        fields = {line.partition(":")[0]: line.partition(":")[2].removeprefix(" ") for line in lines}
        out.append({"id": int(fields["id"]), "data": json.loads(fields["data"]), "fields": sorted(fields)})
    return out


def stream(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """GET a stream to its end (the server closes it): ``(status, content type, body)``."""
    with httpx.stream("GET", url, headers={**SSE, **(headers or {})}, timeout=CLOSE_TIMEOUT_S) as resp:
        return resp.status_code, resp.headers.get("content-type", ""), "".join(resp.iter_text())


def test_unnamed_events_and_tickets_for_reconnects(platform_up: dict[str, Any]) -> None:
    stop_processors(platform_up)
    base, editor = platform_up["base"], platform_up["clients"]["editor"]
    job = editor.post("/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {"text": "x"}}).json()
    other = editor.post("/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {"text": "y"}}).json()
    editor.patch(f"/api/jobs/{job['id']}/", json={"priority": "high"})
    assert editor.post(f"/api/jobs/{job['id']}/cancel/").status_code == 202  # pending → cancelled: finished
    editor.wait_job(job["id"], ("cancelled",))
    url = f"{base}/api/jobs/{job['id']}/events/"

    # with a Bearer header: unnamed events, id = position = data.position, then closed
    status, ctype, body = stream(url, {"Authorization": editor.http.headers["Authorization"]})
    assert status == 200 and ctype.startswith("text/event-stream")
    events = frames(body)
    assert [e["fields"] for e in events] == [["data", "id"]] * len(events)  # no "event:" line
    assert [e["data"]["type"] for e in events] == ["JobSubmitted", "JobUpdated", "JobCancelled"]
    assert all(e["id"] == e["data"]["position"] for e in events)
    ids = [e["id"] for e in events]

    # a ticket: a plain GET with no Authorization header, as EventSource sends it
    resp = editor.post("/api/sse-ticket/", json={"job": job["id"]})
    assert resp.status_code == 201, resp.text
    ticket = resp.json()
    assert set(ticket) == {"ticket", "expires_in"} and 0 < ticket["expires_in"] <= 600
    status, _, body = stream(f"{url}?ticket={ticket['ticket']}")
    assert status == 200 and [e["id"] for e in frames(body)] == ids
    # the same ticket serves the stream's reconnects, resumed after Last-Event-ID
    status, _, body = stream(f"{url}?ticket={ticket['ticket']}", {"Last-Event-ID": str(ids[0])})
    assert status == 200 and [e["id"] for e in frames(body)] == ids[1:]
    # resumed at the finished job's last event: closed at once, nothing sent
    status, ctype, body = stream(f"{url}?ticket={ticket['ticket']}", {"Last-Event-ID": str(ids[-1])})
    assert status == 200 and ctype.startswith("text/event-stream") and frames(body) == []

    # a ticket opens that job's stream only; bad or no credentials → 401
    for bad in (f"{base}/api/jobs/{other['id']}/events/?ticket={ticket['ticket']}", f"{url}?ticket=nonsense", url):
        status, ctype, _ = stream(bad)
        assert status == 401 and ctype.startswith(PROBLEM), bad
    # tickets only for jobs the user may see; the ticket route takes a form body too
    admin_job = platform_up["clients"]["admin"].post(
        "/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {"text": "z"}}
    )
    assert admin_job.status_code == 201, admin_job.text
    assert editor.post("/api/sse-ticket/", json={"job": admin_job.json()["id"]}).status_code == 404
    assert editor.post("/api/sse-ticket/", data={"job": other["id"]}).status_code == 201
    assert httpx.post(f"{base}/api/sse-ticket/", json={"job": job["id"]}).status_code == 401


def test_live_events_from_the_hub_and_revocation(platform_up: dict[str, Any]) -> None:
    stop_processors(platform_up)
    base, editor = platform_up["base"], platform_up["clients"]["editor"]
    pair = httpx.post(f"{base}/api/token/", json={"username": "editor", "password": "editor-password"}).json()
    own = {"Authorization": f"Bearer {pair['access']}"}

    def submit() -> str:
        resp = editor.post("/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {"text": "x"}})
        return str(resp.json()["id"])

    def ticket(job_id: str) -> str:
        return str(httpx.post(f"{base}/api/sse-ticket/", json={"job": job_id}, headers=own).json()["ticket"])

    async def next_event(lines: Any) -> dict[str, Any]:
        block: list[str] = []
        async for line in lines:
            if line:
                block.append(line)
            elif block and not block[0].startswith(":"):
                return frames("\n".join(block) + "\n\n")[0]
            else:
                block = []
        raise AssertionError("the stream ended")

    async def drain(lines: Any) -> list[str]:
        return [line async for line in lines if line.startswith("id:")]

    async def scenario() -> None:
        first, second = submit(), submit()
        t1, t2 = ticket(first), ticket(second)
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            # live: events stored while the stream is open arrive, and it closes once finished
            async with http.stream("GET", f"/api/jobs/{first}/events/?ticket={t1}", headers=SSE) as resp:
                assert resp.status_code == 200
                lines = resp.aiter_lines()
                assert (await asyncio.wait_for(next_event(lines), CLOSE_TIMEOUT_S))["data"]["type"] == "JobSubmitted"
                await asyncio.to_thread(editor.patch, f"/api/jobs/{first}/", json={"priority": "low"})
                assert (await asyncio.wait_for(next_event(lines), CLOSE_TIMEOUT_S))["data"]["type"] == "JobUpdated"
                await asyncio.to_thread(editor.post, f"/api/jobs/{first}/cancel/")
                assert (await asyncio.wait_for(next_event(lines), CLOSE_TIMEOUT_S))["data"]["type"] == "JobCancelled"
                assert await asyncio.wait_for(drain(lines), CLOSE_TIMEOUT_S) == []  # closed after the last event

            # the session that asked for the ticket is revoked: the stream ends, the ticket stops working
            async with http.stream("GET", f"/api/jobs/{second}/events/?ticket={t2}", headers=SSE) as resp:
                assert resp.status_code == 200
                lines = resp.aiter_lines()
                assert (await asyncio.wait_for(next_event(lines), CLOSE_TIMEOUT_S))["data"]["type"] == "JobSubmitted"
                out = await asyncio.to_thread(httpx.post, f"{base}/api/token/logout/", json={"refresh": pair["refresh"]})
                assert out.status_code == 204
                await asyncio.wait_for(drain(lines), CLOSE_TIMEOUT_S)  # the stream ended (the job is still pending)
            again = await http.get(f"/api/jobs/{second}/events/?ticket={t2}", headers=SSE)
            assert again.status_code == 401 and again.headers["content-type"].startswith(PROBLEM)

    asyncio.run(scenario())
