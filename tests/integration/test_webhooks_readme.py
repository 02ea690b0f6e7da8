"""README's *Webhooks* section is true: the endpoint registered as its curl command does
(over the API), and its receiver example, run as written (FastAPI under uvicorn on
loopback, the secret filled in), verifies a real delivery and refuses a forged one."""

from __future__ import annotations

import re
import threading
import uuid
from typing import Any

import httpx

from commands.context import Actor, Context
from commands.messages import CompleteJob, StartJob
from infra.embedded import free_port
from infra.roles import create_user
from tests.conftest import REPO, Client, Runner, wait_until


def _readme_receiver(secret: str) -> str:
    section = (REPO / "README.md").read_text().split("## Webhooks", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "one receiver example in README's Webhooks section"
    assert 'Webhook("whsec_...")' in blocks[0]
    return blocks[0].replace('"whsec_..."', repr(secret))


def test_readme_registration_and_receiver_example_verify_a_delivery(settings: Any) -> None:
    import uvicorn

    from infra.bootstrap import bootstrap
    from infra.dispatcher import build_dispatcher

    system = bootstrap(settings.model_copy(update={"webhook_allow_private": True}))
    runner = Runner(system, {})
    server: Any = None
    try:
        runner.projector()
        base = runner.api()
        runner.start(build_dispatcher(system), "dispatcher")
        create_user(system, "editor", "editor-password", "editor")
        client = Client(base, "editor", "editor-password")
        project = client.post("/api/projects/", json={"name": "Readme"}).json()["id"]

        port = free_port()
        resp = client.post(
            "/api/webhooks/",
            json={"url": f"http://127.0.0.1:{port}/aiorch-hook", "events": ["job.completed", "job.failed"]},
        )
        assert resp.status_code == 201, resp.text
        assert {"id", "secret"} <= set(resp.json()) and resp.json()["secret"].startswith("whsec_")
        printed: list[str] = []
        namespace: dict[str, Any] = {"print": lambda *a: printed.append(" ".join(map(str, a)))}  # the example's print
        exec(compile(_readme_receiver(resp.json()["secret"]), "README.md", "exec"), namespace)  # noqa: S102
        server = uvicorn.Server(uvicorn.Config(namespace["app"], host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        wait_until(lambda: server.started, 20, message="the README receiver to start")

        forged = httpx.post(
            f"http://127.0.0.1:{port}/aiorch-hook",
            content=b'{"type":"job.completed"}',
            headers={"webhook-id": "x", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"},
        )
        assert forged.status_code == 400

        job = client.post("/api/jobs/", json={"project": project, "type": "tts", "parameters": {"text": "Hi."}})
        assert job.status_code == 201, job.text
        job_id = uuid.UUID(job.json()["id"])
        proc = Context(Actor(id="proc-1", username=None, role="processor"), "run-1")
        system.platform.start_job(StartJob(job_id, 1, "proc-1"), proc)
        system.platform.complete_job(CompleteJob(job_id, {"files": [], "meta": {}}), proc)

        def delivered() -> list[dict[str, Any]]:
            log = client.get(f"/api/webhooks/{resp.json()['id']}/deliveries/").json()["results"]
            return [d for d in log if d["status"] == "succeeded"]

        [delivery] = wait_until(delivered, 30, 0.1, "the job.completed delivery")
        assert delivery["event_type"] == "job.completed"
        assert [a["status_code"] for a in delivery["attempts"]] == [204]
        wait_until(lambda: f"done: {job_id} at position {delivery['position']}" in printed, 10, message="its print")
    finally:
        if server is not None:
            server.should_exit = True
        runner.close()
        system.close()
