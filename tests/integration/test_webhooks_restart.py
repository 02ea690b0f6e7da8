"""The dispatcher as its own process (``aiorch dispatcher``), killed with ``kill -9``
between attempts and started again: every (endpoint, matching event) pair is delivered,
the events stored while it was dead included, and no delivery that had been answered 2xx
is sent again. A real HTTP receiver on loopback verifies every request with the
``standardwebhooks`` library."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from commands.context import Actor, Context
from commands.messages import CreateProject, SubmitJob
from commands.webhook_messages import CreateWebhook
from infra.roles import create_user
from projections import webhooks as w
from tests.conftest import wait_until
from tests.integration.test_scaleout import Role, role_env

RETRY_AFTER_S = 5  # the receiver's Retry-After on a first attempt it refuses: the gap the kill lands in


class FlakyReceiver:
    """Answers 503 (``Retry-After``) to the first attempt of every other delivery, 200 to
    everything else; verifies every request with the endpoint's secret (400 if forged) and
    counts the 2xx answers per ``webhook-id``."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets  # path -> secret
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()  # webhook-id -> requests
        self.answered_2xx: Counter[str] = Counter()  # webhook-id -> 2xx answers
        self.forged: list[str] = []
        self.in_flight = 0
        self.requests = 0
        self.flaky = True
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                with receiver.lock:
                    receiver.in_flight += 1
                    receiver.requests += 1
                try:
                    body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                    msg_id = self.headers["webhook-id"]
                    try:
                        Webhook(receiver.secrets[self.path]).verify(body, dict(self.headers))
                    except (WebhookVerificationError, KeyError):
                        with receiver.lock:
                            receiver.forged.append(msg_id)
                        self._answer(400)
                        return
                    with receiver.lock:
                        receiver.seen[msg_id] += 1
                        first = receiver.seen[msg_id] == 1
                        flaky = receiver.flaky and len(receiver.seen) % 2 == 0
                    if first and flaky:
                        self._answer(503, {"retry-after": str(RETRY_AFTER_S)})
                        return
                    with receiver.lock:
                        receiver.answered_2xx[msg_id] += 1
                    self._answer(200)
                finally:
                    with receiver.lock:
                        receiver.in_flight -= 1

            def _answer(self, code: int, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _deliveries(system: Any) -> list[dict[str, Any]]:
    with system.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(w.deliveries)).mappings()]


def test_dispatcher_killed_between_attempts_loses_nothing_and_resends_nothing_answered(settings: Any, tmp_path: Path) -> None:
    from infra.bootstrap import bootstrap

    s = settings.model_copy(update={"webhook_allow_private": True})
    system = bootstrap(s)
    receiver = FlakyReceiver({})
    dispatchers: list[Role] = []
    try:
        editor_id = create_user(system, "editor", "editor-password", "editor")
        editor = Context(Actor(id=editor_id, username="editor", role="editor"), "test")
        project_id, _ = system.platform.create_project(CreateProject("restart"), editor)
        endpoints: dict[str, str] = {}  # endpoint id -> the events it takes
        for path, events in (("/all", ["*"]), ("/created", ["job.created"])):
            endpoint_id, _, secret = system.platform.create_webhook(CreateWebhook(receiver.url + path, events), editor)
            receiver.secrets[path] = secret
            endpoints[str(endpoint_id)] = path

        env = {
            **role_env(s),
            "AIORCH_WEBHOOK_ALLOW_PRIVATE": "true",
            "AIORCH_WEBHOOK_SCHEDULE_S": json.dumps([0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]),
            "AIORCH_WEBHOOK_TIMEOUT_S": "5",
        }

        def start(n: int) -> Role:
            role = Role(["dispatcher"], env, tmp_path / f"dispatcher-{n}.log")
            dispatchers.append(role)
            wait_until(lambda: role.said("leading dispatcher"), 60, 0.1, f"dispatcher {n} to lead")
            return role

        def submit(n: int) -> list[int]:
            return [system.platform.submit_job(SubmitJob(project_id, "tts", {"text": f"job {i}"}), editor)[1] for i in range(n)]

        first = start(1)
        before = submit(12)
        expected_before = 2 * len(before)

        def quiet_between_attempts() -> bool:
            """Every delivery recorded and attempted once at least, nothing in flight, every
            2xx answered recorded as succeeded, and the refused ones waiting their retry."""
            rows = _deliveries(system)
            if len(rows) < expected_before or receiver.in_flight:
                return False
            with receiver.lock:
                answered = set(receiver.answered_2xx)
            succeeded = {r["id"] for r in rows if r["status"] == "succeeded"}
            waiting = [r for r in rows if r["status"] == "pending"]
            return all(r["attempts"] for r in rows) and answered == succeeded and bool(waiting)

        wait_until(quiet_between_attempts, 60, 0.02, "the first attempts to be answered and recorded")
        first.kill()  # kill -9 while the refused deliveries wait for their retry
        assert receiver.in_flight == 0
        receiver.flaky = False
        requests_at_kill = receiver.requests
        answered_before_kill = set(receiver.answered_2xx)
        waiting_at_kill = {r["id"] for r in _deliveries(system) if r["status"] == "pending"}
        assert answered_before_kill and waiting_at_kill

        after = submit(6)  # stored while no dispatcher runs
        assert receiver.requests == requests_at_kill, "nothing is sent while no dispatcher runs"
        start(2)
        positions = before + after
        expected = {w.delivery_id(endpoint_id, p) for endpoint_id in endpoints for p in positions}

        def all_succeeded() -> bool:
            rows = _deliveries(system)
            return len(rows) == len(expected) and all(r["status"] == "succeeded" for r in rows)

        wait_until(all_succeeded, 60, 0.1, "every delivery to succeed after the restart")

        rows = _deliveries(system)
        assert {r["id"] for r in rows} == expected, "one delivery per (endpoint, matching event), none lost"
        assert receiver.forged == []
        assert set(receiver.answered_2xx) == expected, "every delivery was answered 2xx"
        twice = {k: n for k, n in receiver.answered_2xx.items() if n != 1}
        assert twice == {}, "no delivery answered 2xx was sent again"
        by_id = {r["id"]: r for r in rows}
        for delivery in answered_before_kill:
            assert [a["status_code"] for a in by_id[delivery]["attempts"]] == [200]
        for delivery in waiting_at_kill:  # refused before the kill, delivered by the new dispatcher
            assert [a["status_code"] for a in by_id[delivery]["attempts"]] == [503, 200]
            assert receiver.seen[delivery] == 2
    finally:
        for role in dispatchers:
            role.stop()
        receiver.close()
        system.close()
