"""The deliveries' table side of sending: lease the due deliveries with what signing needs
(:func:`claim_due`), and record the senders' attempts in batches (:func:`record_results`):
each delivery's attempt log, status and next attempt (the schedule, jitter,
``Retry-After``), the outcome counts, since when each endpoint's deliveries fail, and the
endpoints to disable for failing too long."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import Connection, Engine, and_, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from commands.context import SYSTEM, Context
from commands.service import Platform
from commands.webhook_messages import DisableWebhook
from infra.dispatcher.sender import AttemptResult
from projections import webhooks as w

log = logging.getLogger(__name__)

_RECORD_ATTEMPT = text(
    "UPDATE webhook_deliveries SET attempts = attempts || CAST(:attempt AS jsonb), round_attempts = :round_attempts,"
    " status = :status, next_attempt_at = :next_attempt_at, succeeded_at = coalesce(:succeeded_at, succeeded_at),"
    " updated_at = :now WHERE id = :id"
)


def _lease_due(conn: Connection, limit: int, now: datetime, lease_s: float) -> list[dict[str, Any]]:
    """Up to ``limit`` due deliveries of enabled targets (skipping rows another sender
    holds), each leased for ``lease_s`` seconds (``next_attempt_at`` moved past it)."""
    d, tg = w.deliveries.c, w.targets.c
    stmt = (
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
    )
    rows = [dict(r) for r in conn.execute(stmt).mappings()]
    if rows:
        until = now + timedelta(seconds=lease_s)
        conn.execute(update(w.deliveries).where(d.id.in_([r["id"] for r in rows])).values(next_attempt_at=until))
    return rows


def _owner_secrets(conn: Connection, owners: set[str]) -> dict[str, str]:
    """``{owner_id: encrypted default secret}`` of the owners that have one."""
    if not owners:
        return {}
    s = w.owner_secrets.c
    return {str(k): str(v) for k, v in conn.execute(select(s.owner_id, s.secret_encrypted).where(s.owner_id.in_(owners)))}


def _add_secrets(rows: list[dict[str, Any]], defaults: dict[str, str], platform: Platform, now: datetime) -> None:
    """Give each row its ``secrets`` (encrypted) and its URL: a per-job delivery signs with
    its owner's default secret (created now when the owner has none), an endpoint's with
    its secret and, until it expires, the one it replaced."""
    for r in rows:
        if r["endpoint_id"] is None:
            encrypted = defaults.get(r["owner_id"])
            if encrypted is None:
                encrypted, _ = platform.default_webhook_secret(r["owner_id"], Context(SYSTEM, f"webhooks-{r['id']}"))
            r["secrets"] = [encrypted]
        else:
            r["url"] = r["endpoint_url"]
            r["secrets"] = [r["secret_encrypted"]]
            if r["previous_secret_encrypted"] and r["previous_expires_at"] and r["previous_expires_at"] > now:
                r["secrets"].append(r["previous_secret_encrypted"])


def claim_due(engine: Engine, platform: Platform, limit: int, lease_s: float) -> list[dict[str, Any]]:
    """Lease up to ``limit`` due deliveries of enabled targets for ``lease_s`` seconds
    (skipping rows another sender holds), with what signing needs: ``[{id, url, body,
    owner_id, endpoint_id, round_attempts, secrets, …}]`` (``secrets`` encrypted)."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        rows = _lease_due(conn, limit, now, lease_s)
        defaults = _owner_secrets(conn, {r["owner_id"] for r in rows if r["endpoint_id"] is None})
    _add_secrets(rows, defaults, platform, now)
    return rows


@dataclass
class _Tally:
    """A batch of attempts as the statements that record them."""

    params: list[dict[str, Any]] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    succeeded: set[str] = field(default_factory=set)
    failed: dict[str, str | None] = field(default_factory=dict)


def _tally(batch: list[tuple[dict[str, Any], AttemptResult]], schedule_s: list[float], now: datetime) -> _Tally:
    """Each attempt's parameters of :data:`_RECORD_ATTEMPT` (status and next attempt per the
    schedule, jitter, ``Retry-After``), the outcome counts, the endpoints that succeeded and
    those that failed (with the last error)."""
    tally = _Tally()
    for row, result in batch:
        done = int(row["round_attempts"]) + 1
        status, next_at, succeeded_at = "succeeded", None, None
        if result.ok:
            succeeded_at = now
        else:
            delay = w.retry_delay(schedule_s, done, result.retry_after_s)
            status, next_at = ("failed", None) if delay is None else ("pending", now + timedelta(seconds=delay))
        tally.params.append(
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
        tally.outcomes[result.outcome] += 1
        if row["endpoint_id"] is not None:
            if result.ok:
                tally.succeeded.add(row["endpoint_id"])
            else:
                tally.failed[row["endpoint_id"]] = result.error
    return tally


def _to_disable(conn: Connection, tally: _Tally, now: datetime, disable_after_s: float) -> dict[str, str]:
    """Mark since when each endpoint fails (cleared by a success in the batch); returns
    ``{endpoint_id: reason}`` of the enabled ones failing for ``disable_after_s`` seconds."""
    tg = w.targets.c
    failing = {k: v for k, v in tally.failed.items() if k not in tally.succeeded}
    if tally.succeeded:
        conn.execute(
            update(w.targets).where(tg.id.in_(tally.succeeded), tg.failing_since.is_not(None)).values(failing_since=None)
        )
    if not failing:
        return {}
    conn.execute(update(w.targets).where(tg.id.in_(failing), tg.failing_since.is_(None)).values(failing_since=now))
    disable: dict[str, str] = {}
    for endpoint_id, since in conn.execute(select(tg.id, tg.failing_since).where(tg.id.in_(failing), tg.enabled.is_(True))):
        if since is not None and (now - since).total_seconds() >= disable_after_s:
            disable[endpoint_id] = f"every delivery failed since {since.isoformat()} (last: {failing[endpoint_id]})"
    return disable


def record_results(
    engine: Engine,
    platform: Platform,
    batch: list[tuple[dict[str, Any], AttemptResult]],
    *,
    schedule_s: list[float],
    disable_after_s: float,
) -> None:
    """Record attempts in one transaction: each delivery's attempt log, status and next
    attempt (the schedule, jitter, ``Retry-After``), the outcome counts, and since when
    each endpoint's deliveries fail; then disable the endpoints failing for
    ``disable_after_s`` seconds (an event, by the system). An endpoint with a success in the
    batch is not failing."""
    if not batch:
        return
    now = datetime.now(UTC)
    tally = _tally(batch, schedule_s, now)
    with engine.begin() as conn:
        conn.execute(_RECORD_ATTEMPT, tally.params)
        for outcome, n in tally.outcomes.items():
            stmt = pg_insert(w.attempt_outcomes).values(outcome=outcome, count=n)
            conn.execute(stmt.on_conflict_do_update(index_elements=["outcome"], set_={"count": w.attempt_outcomes.c.count + n}))
        disable = _to_disable(conn, tally, now, disable_after_s)
    for endpoint_id, reason in disable.items():
        log.warning("disabling webhook %s: %s", endpoint_id, reason)
        platform.disable_webhook(DisableWebhook(UUID(endpoint_id), reason), Context(SYSTEM, f"webhooks-{uuid4()}"))
