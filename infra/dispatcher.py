"""The webhook dispatcher (API.md, *Webhooks*): one active instance under
``Leadership("dispatcher")``, standbys take over.

Two halves, both driven by PostgreSQL (never by Kafka, so a broker outage does not matter):

- the **recorder** follows the store from its tracked position (``projection_tracking``,
  name ``webhook_dispatcher``) and, in the same transaction as that position, keeps the
  endpoints it serves (``webhook_targets``) and turns each matching event into one delivery
  row per target with its payload captured then: the job as of that event (folded from
  the job's events), and its position. An event it cannot handle is parked
  (:mod:`projections.failures`) and the recorder moves on.
- the **senders** pick due deliveries (``SELECT … FOR UPDATE SKIP LOCKED``, then lease
  them by moving ``next_attempt_at`` past the timeout), resolve and check the URL's host
  with the outbound-address guard (DNS rebinding: the request goes to the checked
  address), and POST the body signed per Standard Webhooks for this attempt, no redirects,
  reading at most 4 KiB of the answer. One writer thread records the attempts in batches
  (one transaction for whatever the senders finished meanwhile; a delivery keeps its lease
  until its attempt is recorded, so one answered 2xx just before a ``kill -9`` is sent
  again once the lease ends: at least once, the ``webhook-id`` unchanged). Failures are
  retried on the schedule with jitter and ``Retry-After``; an endpoint whose deliveries all
  failed for ``webhook_disable_after_s`` is disabled (an event, so its owner sees
  ``disabled_reason``).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
from sqlalchemy import Connection, Engine, and_, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from standardwebhooks.webhooks import Webhook

from api.views import job_json
from commands.context import SYSTEM, Context
from commands.job import Job
from commands.outbound import OutboundRefused, Resolver, check_url, pin_url
from commands.service import Platform
from commands.webhook_messages import DisableWebhook
from events.envelope import event_id
from events.jobs import JobSubmitted
from events.users import UserUpdated
from events.webhooks import (
    TEST_EVENT_TYPE,
    DefaultWebhookSecretCreated,
    WebhookEndpointCreated,
    WebhookEndpointDeleted,
    WebhookEndpointDisabled,
    WebhookEndpointUpdated,
    WebhookRedeliveryRequested,
    WebhookSecretRotated,
    WebhookTestRequested,
    subscribed,
    webhook_event_type,
)
from infra.leadership import Leadership, lead_forever
from projections import tables as t
from projections import webhooks as w
from projections.failures import describe, is_transient, park
from projections.follow import NotificationSource, StoreWaiter

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 4096
USER_AGENT = "aiorch-webhooks/1"
JOB_CACHE = 10_000

_RECORD_ATTEMPT = text(
    "UPDATE webhook_deliveries SET attempts = attempts || CAST(:attempt AS jsonb), round_attempts = :round_attempts,"
    " status = :status, next_attempt_at = :next_attempt_at, succeeded_at = coalesce(:succeeded_at, succeeded_at),"
    " updated_at = :now WHERE id = :id"
)


def signature_header(secrets: list[str], msg_id: str, at: datetime, body: str) -> str:
    """``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` per secret, space-separated
    (Standard Webhooks; signed with the ``standardwebhooks`` reference library)."""
    return " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


@dataclass(frozen=True)
class AttemptResult:
    """One attempt: ``status_code`` None when no answer (``error`` says why)."""

    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def outcome(self) -> str:
        """succeeded, http_error, refused (the guard) or network_error (metrics)."""
        if self.ok:
            return "succeeded"
        if self.status_code is not None:
            return "http_error"
        return "refused" if (self.error or "").startswith("refused") else "network_error"

    def as_json(self) -> dict[str, Any]:
        """``{at, status_code, error, duration_ms}``."""
        return {"at": self.at.isoformat(), "status_code": self.status_code, "error": self.error, "duration_ms": self.duration_ms}


class Sender:
    """POSTs one delivery to its URL, pinned to the address the guard checked.

    Args:
        allow_private: ``AIORCH_WEBHOOK_ALLOW_PRIVATE``.
        timeout_s: seconds for the whole attempt (connect, send, first bytes).
        resolver: the guard's resolver (injected by tests; default the system's).
    """

    def __init__(self, *, allow_private: bool, timeout_s: float, resolver: Resolver | None = None, pool: int = 16) -> None:
        self.allow_private, self.timeout_s, self.resolver = allow_private, timeout_s, resolver
        limits = httpx.Limits(max_connections=pool * 2, max_keepalive_connections=pool)
        self.client = httpx.Client(trust_env=False, follow_redirects=False, timeout=timeout_s, limits=limits)

    def send(self, url: str, msg_id: str, body: str, secrets: list[str]) -> AttemptResult:
        """One attempt; never raises."""
        started, at = time.perf_counter(), datetime.now(UTC)

        def result(code: int | None, error: str | None, retry_after: float | None = None) -> AttemptResult:
            return AttemptResult(at, code, error, int((time.perf_counter() - started) * 1000), retry_after)

        try:
            target = check_url(url, field="url", allow_private=self.allow_private, resolve=True, resolver=self.resolver)
        except OutboundRefused as exc:
            return result(None, f"refused: {exc.reason}")
        except OSError as exc:
            return result(None, f"dns: {exc}")
        pinned = pin_url(target, target.addresses[0])
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "host": pinned.host_header,
            "webhook-id": msg_id,
            "webhook-timestamp": str(math.floor(at.timestamp())),
            "webhook-signature": signature_header(secrets, msg_id, at, body),
        }
        extensions = {"sni_hostname": pinned.server_hostname} if pinned.server_hostname else {}
        try:
            request = self.client.build_request("POST", pinned.url, content=body.encode(), headers=headers, extensions=extensions)
            response = self.client.send(request, stream=True)
            try:
                read = 0
                snippet = b""
                for chunk in response.iter_raw():
                    if read < 200:
                        snippet += chunk[: 200 - read]
                    read += len(chunk)
                    if read >= MAX_RESPONSE_BYTES:
                        break
            finally:
                response.close()
        except httpx.TimeoutException:
            return result(None, f"timeout: no answer within {self.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return result(None, f"network: {type(exc).__name__}: {exc}"[:300])
        code = response.status_code
        if 200 <= code < 300:
            return result(code, None)
        error = f"HTTP {code}" + (f": {snippet.decode(errors='replace')}" if snippet else "")
        return result(code, error[:300], retry_after_seconds(response.headers.get("retry-after"), datetime.now(UTC)))

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()


class Dispatcher:
    """Records and sends webhook deliveries; run with :meth:`run_forever` (elected).

    Args:
        engine: the store's database (read models and the dispatcher's tables).
        platform: the write side (folds jobs, loads secrets, disables failing endpoints).
        decrypt: the inverse of the platform's ``encrypt`` (Fernet).
        conninfo: libpq connection string (leadership, LISTEN).
        schedule_s: waits before each attempt (API.md; ``AIORCH_WEBHOOK_SCHEDULE_S``).
        public_url: base of the file URLs inside job payloads.
    """

    def __init__(
        self,
        engine: Engine,
        platform: Platform,
        decrypt: Callable[[str], str],
        conninfo: str,
        *,
        sender: Sender,
        schedule_s: list[float],
        disable_after_s: float,
        waiter: StoreWaiter | None = None,
        poll_interval_s: float = 0.5,
        concurrency: int = 16,
        batch_size: int = 500,
        public_url: str | None = None,
    ) -> None:
        self.engine, self.platform, self.decrypt = engine, platform, decrypt
        self.source: NotificationSource = platform.recorder
        self.sender, self.schedule_s, self.disable_after_s = sender, list(schedule_s), disable_after_s
        self.waiter, self.poll_interval_s, self.batch_size = waiter, poll_interval_s, batch_size
        self.concurrency, self.public_url = max(concurrency, 1), (public_url or "").rstrip("/")
        self.leadership = Leadership(conninfo, "dispatcher", poll_s=max(poll_interval_s, 0.1))
        self._stop = threading.Event()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._usernames: dict[str, str | None] = {}
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook-sender")
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._results: queue.Queue[tuple[dict[str, Any], AttemptResult]] = queue.Queue()
        self._writer_stop = threading.Event()
        self.lease_s = sender.timeout_s + 30.0
        try:  # bootstrap creates them too; this covers a System built with create_tables=False
            w.metadata.create_all(engine)
        except DBAPIError:  # another instance created them at the same moment
            w.metadata.create_all(engine)

    # -- recording ---------------------------------------------------------------------------

    def position(self) -> int:
        """The last position the recorder committed."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(t.tracking.c.position).where(t.tracking.c.name == w.TRACKING_NAME)).scalar() or 0)

    def record_once(self) -> int:
        """Turn the next batch of stored events into deliveries, committing them with the
        tracked position; returns how many events were read."""
        with self.engine.begin() as conn:
            conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(w.TRACKING_NAME))))
            start = conn.execute(select(t.tracking.c.position).where(t.tracking.c.name == w.TRACKING_NAME)).scalar() or 0
            notifications = self.source.select_notifications(start, self.batch_size, inclusive_of_start=False)
            if not notifications:
                return 0
            targets = {r["id"]: dict(r) for r in conn.execute(select(w.targets).where(w.targets.c.deleted.is_(False))).mappings()}
            for n in notifications:
                try:
                    with conn.begin_nested():
                        self._record(conn, targets, self.platform.mapper.to_domain_event(n), n.id)
                except Exception as exc:
                    if is_transient(exc):
                        self._jobs.clear()
                        raise
                    self._jobs.pop(str(n.originator_id), None)
                    targets = {
                        r["id"]: dict(r) for r in conn.execute(select(w.targets).where(w.targets.c.deleted.is_(False))).mappings()
                    }
                    park(conn, w.TRACKING_NAME, n.id, n.topic, describe(exc))
                    log.error("webhook dispatcher parked the event at position %s (%s): %s", n.id, n.topic, describe(exc))
            last = notifications[-1].id
            stmt = pg_insert(t.tracking).values(name=w.TRACKING_NAME, position=last, updated_at=datetime.now(UTC))
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["name"], set_={"position": last, "updated_at": stmt.excluded.updated_at}
                )
            )
        return len(notifications)

    def _record(self, conn: Connection, targets: dict[str, dict[str, Any]], event: Any, position: int) -> None:
        kind = webhook_event_type(event)
        if kind is not None:
            self._record_job_event(conn, targets, event, kind, position)
        elif isinstance(event, (WebhookEndpointCreated, WebhookEndpointUpdated, WebhookEndpointDisabled, WebhookSecretRotated)):
            self._track_endpoint(conn, targets, event)
        elif isinstance(event, WebhookEndpointDeleted):
            conn.execute(update(w.targets).where(w.targets.c.id == str(event.originator_id)).values(deleted=True))
            targets.pop(str(event.originator_id), None)
        elif isinstance(event, WebhookTestRequested):
            target = targets.get(str(event.originator_id))
            if target is not None:
                body = w.payload_body(TEST_EVENT_TYPE, event.timestamp.isoformat(), None, position)
                self._insert(
                    conn,
                    [
                        self._delivery(
                            target["id"], target["id"], None, None, target["owner_id"], event, TEST_EVENT_TYPE, position, body
                        )
                    ],
                )
        elif isinstance(event, WebhookRedeliveryRequested):
            self._redeliver(conn, event)
        elif isinstance(event, DefaultWebhookSecretCreated):
            stmt = pg_insert(w.owner_secrets).values(owner_id=event.owner_id, secret_encrypted=event.secret_encrypted)
            conn.execute(stmt.on_conflict_do_nothing())
        elif isinstance(event, UserUpdated) and "role" in event.changes:
            conn.execute(
                update(w.targets).where(w.targets.c.owner_id == str(event.originator_id)).values(owner_role=event.changes["role"])
            )
            for target in targets.values():
                if target["owner_id"] == str(event.originator_id):
                    target["owner_role"] = event.changes["role"]

    def _track_endpoint(self, conn: Connection, targets: dict[str, dict[str, Any]], event: Any) -> None:
        endpoint_id = str(event.originator_id)
        values: dict[str, Any]
        if isinstance(event, WebhookEndpointCreated):
            values = {
                "id": endpoint_id,
                "url": event.url,
                "events": event.events,
                "enabled": event.enabled,
                "deleted": False,
                "owner_id": event.owner_id,
                "owner_role": event.owner_role,
                "secret_encrypted": event.secret_encrypted,
                "previous_secret_encrypted": None,
                "previous_expires_at": None,
                "failing_since": None,
            }
            conn.execute(pg_insert(w.targets).values(values).on_conflict_do_nothing())
            targets[endpoint_id] = values
            return
        if isinstance(event, WebhookEndpointUpdated):
            values = {k: v for k, v in event.changes.items() if k in ("url", "events", "enabled")}
            if values.get("enabled") is True:
                values["failing_since"] = None
        elif isinstance(event, WebhookEndpointDisabled):
            values = {"enabled": False}
        else:
            values = {
                "secret_encrypted": event.secret_encrypted,
                "previous_secret_encrypted": event.previous_secret_encrypted,
                "previous_expires_at": datetime.fromisoformat(event.previous_expires_at),
            }
        if values:
            conn.execute(update(w.targets).where(w.targets.c.id == endpoint_id).values(**values))
            if endpoint_id in targets:
                targets[endpoint_id].update(values)

    def _redeliver(self, conn: Connection, event: WebhookRedeliveryRequested) -> None:
        d = w.deliveries.c
        where = [d.endpoint_id == str(event.originator_id)]
        if event.delivery_id:
            where.append(d.id == event.delivery_id)
        else:
            where += [d.status == "failed", d.created_at >= datetime.fromisoformat(event.since or "1970-01-01T00:00:00+00:00")]
        conn.execute(
            update(w.deliveries)
            .where(*where)
            .values(status="pending", round_attempts=0, next_attempt_at=datetime.now(UTC), updated_at=datetime.now(UTC))
        )

    def _job_at(self, event: Any) -> Job:
        """The job right after ``event``: the cached fold moved one event on, else folded
        from the store up to that version."""
        job_id = str(event.originator_id)
        job = self._jobs.get(job_id)
        if isinstance(event, JobSubmitted):
            job = event.mutate(None)
        elif job is not None and job.version == event.originator_version - 1:
            job = event.mutate(job)
        else:
            job = self.platform.repository.get(event.originator_id, version=event.originator_version)
        assert job is not None
        self._jobs[job_id] = job
        self._jobs.move_to_end(job_id)
        while len(self._jobs) > JOB_CACHE:
            self._jobs.popitem(last=False)
        return job

    def _username(self, conn: Connection, job: Job, event: Any) -> str | None:
        owner = job.owner_id
        if isinstance(event, JobSubmitted) and event.actor.get("id") == owner:
            self._usernames[owner] = event.actor.get("username")
        if owner not in self._usernames:
            self._usernames[owner] = conn.execute(select(t.users.c.username).where(t.users.c.id == owner)).scalar()
        return self._usernames[owner]

    def _record_job_event(
        self, conn: Connection, targets: dict[str, dict[str, Any]], event: Any, kind: str, position: int
    ) -> None:
        job = self._job_at(event)
        chosen = [
            tg
            for tg in targets.values()
            if tg["enabled"] and subscribed(tg["events"], kind) and w.may_see(tg["owner_role"], tg["owner_id"], job.owner_id)
        ]
        per_job = bool(job.webhook) and subscribed(job.webhook_events or [], kind)
        if not chosen and not per_job:
            return
        row = {**job.state(), "created_by_username": self._username(conn, job, event)}
        body = w.payload_body(kind, event.timestamp.isoformat(), job_json(row, lambda path: self.public_url + path), position)
        rows = [
            self._delivery(tg["id"], tg["id"], str(job.id), None, tg["owner_id"], event, kind, position, body) for tg in chosen
        ]
        if per_job:
            rows.append(
                self._delivery(f"job:{job.id}", None, str(job.id), job.webhook, job.owner_id, event, kind, position, body)
            )
        self._insert(conn, rows)

    @staticmethod
    def _delivery(
        target: str,
        endpoint_id: str | None,
        job_id: str | None,
        url: str | None,
        owner_id: str,
        event: Any,
        kind: str,
        position: int,
        body: str,
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {
            "id": w.delivery_id(target, position),
            "target": target,
            "endpoint_id": endpoint_id,
            "job_id": job_id,
            "url": url,
            "owner_id": owner_id,
            "event_id": event_id(event.originator_id, event.originator_version),
            "event_type": kind,
            "position": position,
            "event_at": event.timestamp,
            "body": body,
            "status": "pending",
            "attempts": [],
            "round_attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }

    def _insert(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            conn.execute(pg_insert(w.deliveries).values(rows).on_conflict_do_nothing())

    # -- sending -------------------------------------------------------------------------------

    def claim_due(self, limit: int) -> list[dict[str, Any]]:
        """Lease up to ``limit`` due deliveries of enabled targets (skipping rows another
        sender holds), with what signing needs."""
        now = datetime.now(UTC)
        d, tg = w.deliveries.c, w.targets.c
        with self.engine.begin() as conn:
            rows = [
                dict(r)
                for r in conn.execute(
                    select(
                        d.id,
                        d.url,
                        d.body,
                        d.owner_id,
                        d.endpoint_id,
                        d.round_attempts,
                        tg.url.label("endpoint_url"),
                        tg.secret_encrypted,
                        tg.previous_secret_encrypted,
                        tg.previous_expires_at,
                    )
                    .select_from(w.deliveries.outerjoin(w.targets, tg.id == d.endpoint_id))
                    .where(
                        d.status == "pending",
                        d.next_attempt_at <= now,
                        or_(d.endpoint_id.is_(None), and_(tg.enabled.is_(True), tg.deleted.is_(False))),
                    )
                    .order_by(d.next_attempt_at)
                    .limit(limit)
                    .with_for_update(of=w.deliveries, skip_locked=True)
                ).mappings()
            ]
            if rows:
                conn.execute(
                    update(w.deliveries)
                    .where(d.id.in_([r["id"] for r in rows]))
                    .values(next_attempt_at=now + timedelta(seconds=self.lease_s))
                )
            owners = {r["owner_id"] for r in rows if r["endpoint_id"] is None}
            secrets = (
                dict(
                    conn.execute(
                        select(w.owner_secrets.c.owner_id, w.owner_secrets.c.secret_encrypted).where(
                            w.owner_secrets.c.owner_id.in_(owners)
                        )
                    ).all()
                )
                if owners
                else {}
            )
        for r in rows:
            if r["endpoint_id"] is None:
                encrypted = secrets.get(r["owner_id"])
                if encrypted is None:
                    encrypted, _ = self.platform.default_webhook_secret(r["owner_id"], Context(SYSTEM, f"webhooks-{r['id']}"))
                r["secrets"] = [encrypted]
            else:
                r["url"] = r["endpoint_url"]
                r["secrets"] = [r["secret_encrypted"]]
                if r["previous_secret_encrypted"] and r["previous_expires_at"] and r["previous_expires_at"] > now:
                    r["secrets"].append(r["previous_secret_encrypted"])
        return rows

    def deliver(self, row: dict[str, Any]) -> AttemptResult:
        """One attempt of a claimed delivery; its result is queued for :meth:`record_results`
        (the delivery keeps its lease until then); returns the result."""
        try:
            result = self.sender.send(row["url"], row["id"], row["body"], [self.decrypt(s) for s in row["secrets"]])
        except Exception as exc:  # a bug must not lose the lease's delivery: record it as a failure
            log.exception("webhook delivery %s failed unexpectedly", row["id"])
            result = AttemptResult(datetime.now(UTC), None, f"internal: {describe(exc)}"[:300], 0)
        self._results.put((row, result))
        return result

    def record_results(self, batch: list[tuple[dict[str, Any], AttemptResult]]) -> None:
        """Record attempts in one transaction: each delivery's attempt log, status and next
        attempt (the schedule, jitter, ``Retry-After``), the outcome counts, and since when
        each endpoint's deliveries fail; then disable the endpoints failing for
        ``disable_after_s``. An endpoint with a success in the batch is not failing."""
        if not batch:
            return
        now = datetime.now(UTC)
        params: list[dict[str, Any]] = []
        outcomes: Counter[str] = Counter()
        succeeded: set[str] = set()
        failed: dict[str, str | None] = {}
        for row, result in batch:
            done = int(row["round_attempts"]) + 1
            status, next_at, succeeded_at = "succeeded", None, None
            if result.ok:
                succeeded_at = now
            else:
                delay = w.retry_delay(self.schedule_s, done, result.retry_after_s)
                status, next_at = ("failed", None) if delay is None else ("pending", now + timedelta(seconds=delay))
            params.append(
                {
                    "id": row["id"],
                    "attempt": json.dumps([result.as_json()]),
                    "round_attempts": done,
                    "status": status,
                    "next_attempt_at": next_at,
                    "succeeded_at": succeeded_at,
                    "now": now,
                }
            )
            outcomes[result.outcome] += 1
            if row["endpoint_id"] is not None:
                if result.ok:
                    succeeded.add(row["endpoint_id"])
                else:
                    failed[row["endpoint_id"]] = result.error
        failing = {k: v for k, v in failed.items() if k not in succeeded}
        disable: dict[str, str] = {}
        tg = w.targets.c
        with self.engine.begin() as conn:
            conn.execute(_RECORD_ATTEMPT, params)
            for outcome, n in outcomes.items():
                stmt = pg_insert(w.attempt_outcomes).values(outcome=outcome, count=n)
                conn.execute(
                    stmt.on_conflict_do_update(index_elements=["outcome"], set_={"count": w.attempt_outcomes.c.count + n})
                )
            if succeeded:
                conn.execute(
                    update(w.targets).where(tg.id.in_(succeeded), tg.failing_since.is_not(None)).values(failing_since=None)
                )
            if failing:
                conn.execute(update(w.targets).where(tg.id.in_(failing), tg.failing_since.is_(None)).values(failing_since=now))
                for endpoint_id, since in conn.execute(
                    select(tg.id, tg.failing_since).where(tg.id.in_(failing), tg.enabled.is_(True))
                ).all():
                    if since is not None and (now - since).total_seconds() >= self.disable_after_s:
                        disable[endpoint_id] = f"every delivery failed since {since.isoformat()} (last: {failing[endpoint_id]})"
        for endpoint_id, reason in disable.items():
            log.warning("disabling webhook %s: %s", endpoint_id, reason)
            self.platform.disable_webhook(DisableWebhook(UUID(endpoint_id), reason), Context(SYSTEM, f"webhooks-{uuid4()}"))

    def _write_results(self) -> None:
        """The result writer: record queued results in batches (up to 500) until
        :meth:`stop` and the queue is empty; a database error keeps the batch and retries."""
        batch: list[tuple[dict[str, Any], AttemptResult]] = []
        while True:
            if not batch:
                try:
                    batch.append(self._results.get(timeout=0.2))
                except queue.Empty:
                    if self._writer_stop.is_set():
                        return
                    continue
            while len(batch) < 500:
                try:
                    batch.append(self._results.get_nowait())
                except queue.Empty:
                    break
            try:
                self.record_results(batch)
                batch = []
            except Exception:
                log.exception("recording %d webhook attempts failed; retrying", len(batch))
                time.sleep(1.0)

    def send_due(self) -> int:
        """Hand due deliveries to the sender threads (up to the free capacity); returns how many."""
        with self._lock:
            free = self.concurrency * 4 - len(self._in_flight)
        if free <= 0:
            return 0
        rows = self.claim_due(free)
        for row in rows:
            with self._lock:
                self._in_flight.add(row["id"])
            future: Future[AttemptResult] = self._pool.submit(self.deliver, row)
            future.add_done_callback(functools.partial(self._done, row["id"]))
        return len(rows)

    def _done(self, delivery: str, _future: Future[AttemptResult]) -> None:
        with self._lock:
            self._in_flight.discard(delivery)

    def next_due_in(self) -> float | None:
        """Seconds until the next pending delivery of a served target is due (None: none)."""
        d, tg = w.deliveries.c, w.targets.c
        with self.engine.connect() as conn:
            nxt = conn.execute(
                select(func.min(d.next_attempt_at))
                .select_from(w.deliveries.outerjoin(w.targets, tg.id == d.endpoint_id))
                .where(d.status == "pending", or_(d.endpoint_id.is_(None), and_(tg.enabled.is_(True), tg.deleted.is_(False))))
            ).scalar()
        return None if nxt is None else max((nxt - datetime.now(UTC)).total_seconds(), 0.0)

    # -- running -------------------------------------------------------------------------------

    def step(self) -> float:
        """Record what the store has, send what is due; returns the seconds to wait."""
        recorded = self.record_once()
        sent = self.send_due()
        if recorded == self.batch_size or sent:
            return 0.0
        with self._lock:
            busy = len(self._in_flight) >= self.concurrency * 4
        if busy:
            return 0.01
        due = self.next_due_in()
        wait = self.poll_interval_s if due is None else min(due, self.poll_interval_s)
        if wait > 0 and self.waiter is not None:
            self.waiter.wait(wait)
            return 0.0
        return wait

    def run_forever(self) -> None:
        """Lead (or stand by) until :meth:`stop`."""
        writer = threading.Thread(target=self._write_results, name="webhook-results", daemon=True)
        writer.start()
        try:
            lead_forever(self.leadership, self._stop, self.step)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=False)
            self._writer_stop.set()  # the writer records what the senders queued, then returns
            writer.join()
            self.sender.close()
            if self.waiter is not None:
                self.waiter.close()

    def stop(self) -> None:
        """Ask :meth:`run_forever` to return (in-flight attempts finish and are recorded)."""
        self._stop.set()


def build_dispatcher(system: Any, *, resolver: Resolver | None = None) -> Dispatcher:
    """The dispatcher of ``system`` (a :class:`~infra.bootstrap.System`)."""
    from infra.db import conninfo
    from infra.secrets import fernet

    s = system.settings
    cipher = fernet(s)
    sender = Sender(
        allow_private=s.webhook_allow_private, timeout_s=s.webhook_timeout_s, resolver=resolver, pool=s.webhook_concurrency
    )
    return Dispatcher(
        system.engine,
        system.platform,
        lambda token: cipher.decrypt(token.encode()).decode(),
        conninfo(system.database_url),
        sender=sender,
        schedule_s=s.webhook_schedule_s,
        disable_after_s=s.webhook_disable_after_s,
        waiter=system.store_waiter(),
        poll_interval_s=max(s.poll_interval_s * 10, 0.1),
        concurrency=s.webhook_concurrency,
        public_url=s.public_url,
    )
