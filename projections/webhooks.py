"""The webhook dispatcher's tables (beside the event store, not a read-model generation:
deliveries and their attempts are operational state derived from the store once, with the
payload captured then) and the pure rules of delivery: payloads, retry schedule, visibility.

- ``webhook_targets``: every endpoint as of the dispatcher's tracked position, with its
  encrypted secrets (the dispatcher decrypts them) and since when its deliveries fail.
- ``webhook_owner_secrets``: each owner's encrypted default secret (per-job webhooks).
- ``webhook_deliveries``: exactly one row per (target, event position); ``target`` is the
  endpoint id or ``job:<job id>`` for a per-job webhook. ``body`` is the exact JSON text
  that is signed and sent; ``attempts`` lists ``{at, status_code, error, duration_ms}``.
- ``webhook_attempt_outcomes``: attempts counted by outcome (Prometheus, across restarts).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()
Json = JSON().with_variant(JSONB(), "postgresql")
TRACKING_NAME = "webhook_dispatcher"
_DELIVERY_NAMESPACE = uuid.UUID("3f2a9c4d-8e7b-4a61-b5d0-c1e2f3a4b5c6")

#: API.md: attempts after 0 s, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_SCHEDULE_S: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER = 0.2

targets = Table(
    "webhook_targets",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("url", Text, nullable=False),
    Column("events", Json, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("owner_id", String(36), nullable=False, index=True),
    Column("owner_role", String(20), nullable=False),
    Column("secret_encrypted", Text, nullable=False),
    Column("previous_secret_encrypted", Text),
    Column("previous_expires_at", DateTime(timezone=True)),
    Column("failing_since", DateTime(timezone=True)),
)

owner_secrets = Table(
    "webhook_owner_secrets",
    metadata,
    Column("owner_id", String(36), primary_key=True),
    Column("secret_encrypted", Text, nullable=False),
)

deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("target", String(80), nullable=False),
    Column("endpoint_id", String(36), index=True),
    Column("job_id", String(36)),
    Column("url", Text),
    Column("owner_id", String(36), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("event_at", DateTime(timezone=True), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(10), nullable=False),
    Column("attempts", Json, nullable=False),
    Column("round_attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("succeeded_at", DateTime(timezone=True)),
    UniqueConstraint("target", "position", name="ux_webhook_deliveries_target_position"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at"),
)

attempt_outcomes = Table(
    "webhook_attempt_outcomes",
    metadata,
    Column("outcome", String(20), primary_key=True),
    Column("count", BigInteger, nullable=False),
)


def delivery_id(target: str, position: int) -> str:
    """The delivery's id (and ``webhook-id``): UUID 5 of (target, position), so recording
    the same event twice for a target is one row."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{target}:{position}"))


def payload_body(event_type: str, timestamp: str, job: dict[str, Any] | None, position: int) -> str:
    """The JSON body sent: ``{type, timestamp, data: {job, position}}`` (compact, stable)."""
    return json.dumps(
        {"type": event_type, "timestamp": timestamp, "data": {"job": job, "position": position}},
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )


def may_see(owner_role: str, owner_id: str, job_owner_id: str) -> bool:
    """Whether an endpoint's owner may see a job (API.md, *General*): admins and viewers
    every job, editors their own."""
    return owner_role in ("admin", "viewer") or owner_id == job_owner_id


def retry_delay(
    schedule: Sequence[float],
    attempts_done: int,
    retry_after_s: float | None = None,
    *,
    rand: Callable[[float, float], float] = random.uniform,
) -> float | None:
    """Seconds to wait before the next attempt after ``attempts_done`` attempts of this
    round failed, or None when the schedule is exhausted (the delivery failed).

    ``schedule[k]`` is the wait before attempt k+1 (``schedule[0]`` before the first, after
    the event is recorded), with ±20 % jitter, and never less than ``Retry-After``.
    """
    if attempts_done >= len(schedule):
        return None
    delay = float(schedule[attempts_done]) * rand(1 - JITTER, 1 + JITTER)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return max(delay, 0.0)


def delivery_json(row: Any) -> dict[str, Any]:
    """The contract's delivery shape: ``{id, event_id, event_type, position, status,
    attempts: [{at, status_code, error, duration_ms}], next_attempt_at, created_at}``."""
    nxt = row["next_attempt_at"] if row["status"] == "pending" else None
    return {
        "id": row["id"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "position": row["position"],
        "status": row["status"],
        "attempts": list(row["attempts"] or []),
        "next_attempt_at": nxt.isoformat() if nxt is not None else None,
        "created_at": row["created_at"].isoformat(),
    }
