"""Pure webhook rules: signing (checked against the standardwebhooks verifier), the retry
schedule with jitter and Retry-After, and the event-type mapping."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from events.jobs import JobCompleted, JobStarted
from events.webhooks import EVENT_TYPES, WEBHOOK_EVENT_TYPES, subscribed, webhook_event_type
from infra.dispatcher import retry_after_seconds, signature_header
from projections.webhooks import DEFAULT_SCHEDULE_S, may_see, retry_delay


def test_signature_is_hmac_of_id_timestamp_body_per_secret() -> None:
    old, new = "whsec_" + base64.b64encode(b"a" * 32).decode(), "whsec_" + base64.b64encode(b"b" * 32).decode()
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    header = signature_header([new, old], "msg_1", at, '{"x":1}')
    ts = str(math.floor(at.timestamp()))
    expected = base64.b64encode(hmac.new(b"b" * 32, f'msg_1.{ts}.{{"x":1}}'.encode(), hashlib.sha256).digest()).decode()
    assert header.split(" ")[0] == f"v1,{expected}"
    assert len(header.split(" ")) == 2
    now = datetime.now(UTC)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(math.floor(now.timestamp())),
        "webhook-signature": signature_header([new, old], "msg_1", now, "{}"),
    }
    assert Webhook(old).verify("{}", headers) == {}
    assert Webhook(new).verify("{}", headers) == {}


def test_schedule_jitter_retry_after_and_exhaustion() -> None:
    assert DEFAULT_SCHEDULE_S == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert retry_delay([0, 5, 300], 1, rand=lambda a, b: a) == 4.0
    assert retry_delay([0, 5, 300], 1, rand=lambda a, b: b) == 6.0
    assert retry_delay([0, 5, 300], 1, 60, rand=lambda a, b: 1.0) == 60
    assert retry_delay([0, 5, 300], 3) is None
    for _ in range(100):
        assert 240 <= (retry_delay([0, 5, 300], 2) or 0) <= 360
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("7", now) == 7
    assert retry_after_seconds("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30
    assert retry_after_seconds("soon", now) is None


def test_event_types_map_as_the_contract_says() -> None:
    assert WEBHOOK_EVENT_TYPES == {
        "JobSubmitted": "job.created",
        "JobStarted": "job.started",
        "JobProgressed": "job.progress",
        "JobLogsAppended": "job.logs",
        "JobRetried": "job.retried",
        "JobCompleted": "job.completed",
        "JobFailed": "job.failed",
        "JobCancelled": "job.cancelled",
    }
    assert "webhook.test" in EVENT_TYPES
    assert webhook_event_type(JobStarted.__new__(JobStarted)) == "job.started"
    assert webhook_event_type(JobCompleted.__new__(JobCompleted)) == "job.completed"
    assert subscribed(["*"], "job.logs") and not subscribed(["job.completed"], "job.logs")
    assert (
        may_see("viewer", "v", "e")
        and may_see("admin", "a", "e")
        and not may_see("editor", "x", "e")
        and may_see("editor", "e", "e")
    )
