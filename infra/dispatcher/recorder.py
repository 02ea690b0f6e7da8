"""The recorder half of the webhook dispatcher: it follows the store from its tracked
position (``projection_tracking``, name ``webhook_dispatcher``) and, in the same transaction
as that position, keeps the endpoints it serves (``webhook_targets``) and turns each matching
event into one delivery row per target with its payload captured then: the job as of that
event (folded from the job's events), and its position. An event it cannot handle is parked
(:mod:`projections.failures`) and the recorder moves on."""

from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from api.views import job_json
from commands.job import Job
from commands.service import Platform
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
from projections import tables as t
from projections import webhooks as w
from projections.failures import describe, is_transient, park
from projections.follow import NotificationSource
from projections.history import JobRows, StoreHistory

log = logging.getLogger(__name__)

#: jobs whose latest fold the recorder keeps (least recently used dropped first)
JOB_CACHE = 10_000


class DeliveryRecorder:
    """Turns stored events into delivery rows (see the module's docstring).

    Args:
        engine: the store's database (read models and the dispatcher's tables).
        platform: the write side (its recorder is the source; it folds jobs).
        batch_size: events per transaction.
        public_url: base of the file URLs inside job payloads (no trailing slash).
    """

    def __init__(self, engine: Engine, platform: Platform, *, batch_size: int = 500, public_url: str = "") -> None:
        self.engine, self.platform = engine, platform
        self.source: NotificationSource = platform.recorder
        self.batch_size, self.public_url = batch_size, public_url
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._job_rows = JobRows(StoreHistory.of_store(engine, platform.recorder, platform.mapper), JOB_CACHE)
        self._usernames: dict[str, str | None] = {}

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
        assert isinstance(job, Job)
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
        row = {**self._job_rows.after(event, position).as_dict(), "created_by_username": self._username(conn, job, event)}
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
