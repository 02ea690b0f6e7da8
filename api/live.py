"""The live feed: one hub per API process follows the event store and pushes each event to
the WebSocket clients that may see it, in global-position order, only after the read
models include it (ARCHITECTURE.md, invariants 5 and 6).

A client that connects with ``after=P`` is registered first (live messages queue up), then
replayed everything visible after P up to the hub's last pushed position, then given the
queue: no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, Column, DateTime, Engine, MetaData, String, Table, delete, insert, select

from events import to_envelope
from projections import tables as t

log = logging.getLogger(__name__)
metadata = MetaData()

ws_tickets = Table(
    "ws_tickets",
    metadata,
    Column("ticket", String(64), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used", Boolean, nullable=False, default=False),
)

TICKET_TTL_S = 30
STATUS_EVENTS = frozenset({"JobSubmitted", "JobStarted", "JobCompleted", "JobFailed", "JobCancelled", "JobRetried"})


def issue_ticket(engine: Engine, user_id: str) -> str:
    """A single-use WebSocket ticket for ``user_id``, valid :data:`TICKET_TTL_S` seconds."""
    ticket = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(delete(ws_tickets).where(ws_tickets.c.expires_at < datetime.now(UTC)))
        conn.execute(
            insert(ws_tickets).values(
                ticket=ticket, user_id=user_id, expires_at=datetime.now(UTC) + timedelta(seconds=TICKET_TTL_S)
            )
        )
    return ticket


def redeem_ticket(engine: Engine, ticket: str) -> str | None:
    """The user id of an unexpired ticket, which is consumed; None otherwise."""
    with engine.begin() as conn:
        return conn.execute(
            delete(ws_tickets)
            .where(ws_tickets.c.ticket == ticket, ws_tickets.c.expires_at >= datetime.now(UTC))
            .returning(ws_tickets.c.user_id)
        ).scalar()


def message_type(event_type: str) -> str:
    """``job_status_change``, ``job_progress`` or ``job_update``."""
    if event_type in STATUS_EVENTS:
        return "job_status_change"
    return "job_progress" if event_type == "JobProgressed" else "job_update"


@dataclass
class Feed:
    """What one connection wants: ``kind`` ``job`` (one job), ``jobs`` (visible jobs) or
    ``events`` (every event, admins)."""

    kind: str
    user: dict[str, Any]
    job_id: str | None = None

    def wants(self, aggregate_id: str, row: dict[str, Any] | None) -> bool:
        """Whether an event of ``aggregate_id`` (a job if ``row``) goes to this feed."""
        if self.kind == "events":
            return True
        if row is None or row.get("archived"):
            return False
        if self.kind == "job":
            return aggregate_id == self.job_id
        return self.user["role"] != "editor" or row["created_by_id"] == self.user["id"]


@dataclass
class Subscriber:
    """One connection's queue, filled by the hub thread through the connection's loop."""

    feed: Feed
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any] | None]
    overflowed: bool = False
    last_queued: int = 0

    def offer(self, message: dict[str, Any]) -> None:
        """Queue a message (from the hub thread); on overflow, ask the client to resync."""

        def put() -> None:
            if self.overflowed:
                return
            if self.queue.full():
                self.overflowed = True
                self.queue.put_nowait(None)  # the sender sees None and sends resync_required
                return
            self.queue.put_nowait(message)

        self.loop.call_soon_threadsafe(put)


@dataclass
class LiveHub:
    """Follows the store from its head at start; pushes after the read models caught up.

    Args:
        recorder/decode: the store's recorder and its mapper's ``to_domain_event``.
        engine: the read models' database (rows of the pushed jobs).
        projected: the read models' position.
        wait: blocks until the store has news (or a timeout passes).
    """

    recorder: Any
    decode: Callable[[Any], Any]
    engine: Engine
    projected: Callable[[], int]
    wait: Callable[[float], None]
    fold: Callable[[Any, int], dict[str, Any]] | None = None
    queue_size: int = 1000
    subscribers: list[Subscriber] = field(default_factory=list)
    position: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def ensure_started(self) -> None:
        """Start following the store (once)."""
        with self._lock:
            if self._thread is None:
                self.position = self.recorder.max_notification_id() or 0
                self._thread = threading.Thread(target=self._run, name="live-hub", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop following."""
        self._stop.set()

    def subscribe(self, sub: Subscriber) -> int:
        """Register ``sub``; returns the position up to which it must replay from the store."""
        self.ensure_started()
        with self._lock:
            self.subscribers.append(sub)
            return self.position

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget ``sub``."""
        with self._lock:
            if sub in self.subscribers:
                self.subscribers.remove(sub)

    def messages(self, notifications: list[Any]) -> list[tuple[str, dict[str, Any] | None, dict[str, Any]]]:
        """``(aggregate id, job row or None, event envelope)`` per notification. The row is
        the job as it was right after that event: the read-model row when it is at that
        version (the usual case), else the job folded from the store up to it."""
        decoded = [(n, self.decode(n)) for n in notifications]
        job_ids = {str(n.originator_id) for n, e in decoded if type(e).__name__.startswith("Job")}
        rows: dict[str, dict[str, Any]] = {}
        if job_ids:
            with self.engine.connect() as conn:
                rows = {r["id"]: dict(r) for r in conn.execute(select(t.jobs).where(t.jobs.c.id.in_(job_ids))).mappings()}
        out = []
        for n, event in decoded:
            row = rows.get(str(n.originator_id))
            if row is not None and row["version"] != n.originator_version and self.fold is not None:
                row = {**self.fold(n.originator_id, n.originator_version), "created_by_username": row["created_by_username"]}
            out.append((str(n.originator_id), row, to_envelope(event, n.id)))
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = list(self.recorder.select_notifications(self.position, 500, inclusive_of_start=False))
                if not batch:
                    self.wait(0.5)
                    continue
                deadline = time.monotonic() + 30
                while self.projected() < batch[-1].id and not self._stop.is_set():  # push after the read model
                    if time.monotonic() > deadline:
                        log.warning("the read models lag behind position %s; still waiting to push", batch[-1].id)
                        deadline = time.monotonic() + 30
                    time.sleep(0.005)
                items = self.messages(batch)
                with self._lock:
                    for aggregate_id, row, envelope in items:
                        for sub in self.subscribers:
                            if envelope["position"] > sub.last_queued and sub.feed.wants(aggregate_id, row):
                                sub.offer(render(sub.feed, row, envelope))
                    self.position = batch[-1].id
            except Exception:
                log.exception("live hub failed; retrying")
                self._stop.wait(1.0)


def render(feed: Feed, row: dict[str, Any] | None, envelope: dict[str, Any]) -> dict[str, Any]:
    """The message for ``feed``: the event envelope (``events``) or
    ``{type, position, event_type, job_id, job}`` with ``job`` filled in by the sender."""
    if feed.kind == "events":
        return {
            "type": "event",
            **{k: envelope[k] for k in ("position", "aggregate_id", "version", "occurred_at", "actor", "correlation_id", "data")},
            "event_type": envelope["type"],
        }
    return {
        "type": message_type(envelope["type"]),
        "position": envelope["position"],
        "event_type": envelope["type"],
        "job_id": envelope["aggregate_id"],
        "job": row,
    }
