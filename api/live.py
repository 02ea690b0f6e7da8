"""The live feed: one hub per API process follows the event store and pushes each event to
the WebSocket clients that may see it, in global-position order, only after the read
models include it (ARCHITECTURE.md, invariants 5 and 6).

A client that connects with ``after=P`` is registered first (live messages queue up), then
replayed everything visible after P up to the hub's last pushed position, then given the
queue: no gap and no duplicate.

The hub also tracks every open live connection (WebSocket and SSE) per user: at most
``max_per_user`` at a time, and each one re-checked when an event of its user arrives (a
logout, a deactivation, a password change): a connection whose token no longer passes is
revoked (its WebSocket closes with 4401, its SSE stream ends). An event the hub cannot
decode is logged and skipped (ARCHITECTURE.md invariant 11), never retried forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from api.deps import Services, check_token
from commands.errors import Unauthenticated
from events import to_envelope
from projections import tables as t
from projections.history import JobRows
from projections.readmodels.job_row import JobRow

log = logging.getLogger(__name__)
#: seconds between store reads of an idle hub when no NOTIFY came (a safety net: the
#: store's NOTIFY wakes it on each append; a lost LISTEN connection is retried after it)
IDLE_RECHECK_S = 2.0
STATUS_EVENTS = frozenset({"JobSubmitted", "JobStarted", "JobCompleted", "JobFailed", "JobCancelled", "JobRetried"})


def token_still_valid(services: Services, token: str) -> bool:
    """Whether the access ``token`` still passes :func:`api.deps.check_token` (blocking):
    not expired, its session not revoked, its user active, no password change since."""
    try:
        check_token(services, token, "access")
    except Unauthenticated:
        return False
    return True


def message_type(event_type: str) -> str:
    """``job_status_change``, ``job_progress`` or ``job_update``."""
    if event_type in STATUS_EVENTS:
        return "job_status_change"
    return "job_progress" if event_type == "JobProgressed" else "job_update"


@dataclass
class Feed:
    """What one connection wants: ``kind`` ``job`` (one job), ``jobs`` (visible jobs),
    ``events`` (every event, admins) or ``history`` (every event of one job, archiving
    included: an SSE stream)."""

    kind: str
    user: dict[str, Any]
    job_id: str | None = None

    def wants(self, aggregate_id: str, row: dict[str, Any] | None) -> bool:
        """Whether an event of ``aggregate_id`` (a job if ``row``) goes to this feed."""
        if self.kind == "events":
            return True
        if self.kind == "history":
            return aggregate_id == self.job_id
        if row is None or row.get("archived"):
            return False
        if self.kind == "job":
            return aggregate_id == self.job_id
        return bool(self.user["role"] != "editor" or row["created_by_id"] == self.user["id"])


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
        self.loop.call_soon_threadsafe(self.put, message)

    def put(self, message: dict[str, Any]) -> None:
        """Queue a message (in :attr:`loop`); on overflow, ask the client to resync."""
        if self.overflowed:
            return
        if self.queue.full():
            self.overflowed = True
            while not self.queue.empty():  # what is queued is not sent: a resume replays it
                self.queue.get_nowait()
            self.queue.put_nowait(None)  # the sender sees None and sends resync_required
            return
        self.queue.put_nowait(message)


def _put_all(deliveries: list[tuple[Subscriber, dict[str, Any]]]) -> None:
    """Queue one batch's messages, in order, in their subscribers' loop."""
    for sub, message in deliveries:
        sub.put(message)


class MessageTexts:
    """Serialised live messages shared by the connections that receive the same one: a
    user's connections to the job feeds get the same text for an event (the job's file URLs
    are signed per user), every admin on ``/ws/events/`` the same envelope. Keyed by
    :func:`text_key`; keeps the last ``size`` texts; thread-safe (each connection's sender
    runs in its server's event loop)."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._texts: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> str | None:
        """The text stored under ``key``, if still kept."""
        with self._lock:
            return self._texts.get(key)

    def put(self, key: tuple[Any, ...], text: str) -> None:
        """Keep ``text`` under ``key`` (the oldest text goes beyond ``size``)."""
        with self._lock:
            self._texts[key] = text
            while len(self._texts) > self.size:
                self._texts.popitem(last=False)


def text_key(feed: Feed, message: dict[str, Any]) -> tuple[Any, ...] | None:
    """Under what a live ``message`` for ``feed`` is shared (None: not shared): the job
    feeds' message of a position per user, the events feed's per position."""
    if feed.kind in ("job", "jobs"):
        return ("job", str(feed.user["id"]), message["position"])
    if feed.kind == "events":
        return ("events", message["position"])
    return None


@dataclass(eq=False)
class LiveConnection:
    """One open WebSocket or SSE connection, as the hub tracks it.

    Args:
        user_id: its user.
        check: whether its credentials still pass (blocking: reads the read models; called
            from the hub thread after the read models include an event of the user).
        loop: the connection's event loop.
        on_revoke: run in ``loop`` once, when the connection is revoked.
    """

    user_id: str
    check: Callable[[], bool]
    loop: asyncio.AbstractEventLoop
    on_revoke: Callable[[], None]
    revoked: bool = False

    def revoke(self) -> None:
        """Revoke (from any thread): ``on_revoke`` runs once in the connection's loop."""
        if self.revoked:
            return
        self.revoked = True
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing left to close
            self.loop.call_soon_threadsafe(self.on_revoke)


@dataclass
class LiveHub:
    """Follows the store from its head at start; pushes after the read models caught up.

    Args:
        recorder/decode: the store's recorder and its mapper's ``to_domain_event``.
        engine: the read models' database (rows of the pushed jobs).
        projected: the read models' position.
        wait: blocks until the store has news (or a timeout passes).
        reads: an ``api.readwait.ReadWaiter`` to wait for the read models (else polling
            ``projected``); stopped with the hub.
        max_per_user: open live connections a user may have in this process.
    """

    recorder: Any
    decode: Callable[[Any], Any]
    engine: Engine
    projected: Callable[[], int]
    wait: Callable[[float], None]
    job_rows: JobRows | None = None
    queue_size: int = 1000
    texts: MessageTexts = field(default_factory=MessageTexts)  # serialised messages senders share
    reads: Any = None
    max_per_user: int = 20
    subscribers: list[Subscriber] = field(default_factory=list)
    connections: dict[str, list[LiveConnection]] = field(default_factory=dict)
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
        """Stop following (and the read waiter)."""
        self._stop.set()
        if self.reads is not None:
            self.reads.stop()

    def open(self, conn: LiveConnection) -> bool:
        """Count ``conn`` as open; False (not counted) when its user already has
        ``max_per_user`` open connections in this process."""
        self.ensure_started()
        with self._lock:
            mine = self.connections.setdefault(conn.user_id, [])
            if len(mine) >= self.max_per_user:
                return False
            mine.append(conn)
            return True

    def close(self, conn: LiveConnection) -> None:
        """Forget ``conn`` (idempotent)."""
        with self._lock:
            mine = self.connections.get(conn.user_id, [])
            if conn in mine:
                mine.remove(conn)
            if not mine:
                self.connections.pop(conn.user_id, None)

    def open_count(self, user_id: str) -> int:
        """Open live connections of ``user_id`` in this process."""
        with self._lock:
            return len(self.connections.get(user_id, []))

    def recheck(self, user_ids: set[str]) -> None:
        """Re-check the open connections of ``user_ids``; revoke those that no longer pass."""
        with self._lock:
            conns = [c for uid in user_ids for c in self.connections.get(uid, []) if not c.revoked]
        for conn in conns:
            try:
                valid = conn.check()
            except Exception:  # a database hiccup: keep the connection, the next event re-checks
                log.exception("could not re-check a live connection of user %s", conn.user_id)
                continue
            if not valid:
                log.info("revoking a live connection of user %s", conn.user_id)
                conn.revoke()

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
        version (the usual case: it is remembered in ``job_rows``), else the remembered row
        of the version before moved on by :func:`projections.readmodels.job_row` in memory
        (a job with several events in one batch), else the job folded from the store up to
        that event (the first time this process sees the job behind its read-model row)."""
        decoded = []
        for n in notifications:
            try:
                decoded.append((n, self.decode(n)))
            except Exception:
                log.exception("live feed: cannot decode the event at position %s (topic %s); skipped", n.id, n.topic)
        job_ids = {str(n.originator_id) for n, e in decoded if type(e).__name__.startswith("Job")}
        rows: dict[str, dict[str, Any]] = {}
        if job_ids:
            with self.engine.connect() as conn:
                rows = {r["id"]: dict(r) for r in conn.execute(select(t.jobs).where(t.jobs.c.id.in_(job_ids))).mappings()}
        out = []
        for n, event in decoded:
            try:
                row = rows.get(str(n.originator_id))
                if row is not None and self.job_rows is not None:
                    if row["version"] == n.originator_version:
                        self.job_rows.keep(JobRow.of(row))
                    else:
                        after = self.job_rows.after(event, n.id).as_dict()
                        row = {**after, "created_by_username": row["created_by_username"]}
                out.append((str(n.originator_id), row, to_envelope(event, n.id)))
            except Exception:
                log.exception("live feed: cannot render the event at position %s; skipped", n.id)
        return out

    def _wait_projected(self, position: int) -> None:
        """Block until the read models include ``position`` (or the hub stops)."""
        deadline = time.monotonic() + 30
        while not self._stop.is_set():
            if self.reads is not None:
                if self.reads.wait_sync(position, 1.0):
                    return
            elif self.projected() >= position:
                return
            else:
                time.sleep(0.005)
            if time.monotonic() > deadline:
                log.warning("the read models lag behind position %s; still waiting to push", position)
                deadline = time.monotonic() + 30

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = list(self.recorder.select_notifications(self.position, 500, inclusive_of_start=False))
                if not batch:
                    self.wait(IDLE_RECHECK_S)
                    continue
                self._wait_projected(batch[-1].id)  # push after the read model
                if self._stop.is_set():
                    return
                items = self.messages(batch)
                deliveries: dict[asyncio.AbstractEventLoop, list[tuple[Subscriber, dict[str, Any]]]] = {}
                with self._lock:
                    for aggregate_id, row, envelope in items:
                        for sub in self.subscribers:
                            if envelope["position"] > sub.last_queued and sub.feed.wants(aggregate_id, row):
                                deliveries.setdefault(sub.loop, []).append((sub, render(sub.feed, row, envelope)))
                    for loop, batch_of_loop in deliveries.items():  # one hand-over per loop and batch
                        with contextlib.suppress(RuntimeError):  # that loop has closed
                            loop.call_soon_threadsafe(_put_all, batch_of_loop)
                    self.position = batch[-1].id
                    users = {str(n.originator_id) for n in batch} & set(self.connections)
                if users:
                    self.recheck(users)
            except Exception:
                log.exception("live hub failed; retrying")
                self._stop.wait(1.0)


def render(feed: Feed, row: dict[str, Any] | None, envelope: dict[str, Any]) -> dict[str, Any]:
    """The message for ``feed``: the event envelope (``events``), ``{type: "history",
    position, envelope, job}`` (``history``, ``job`` the row) or
    ``{type, position, event_type, job_id, job}`` with ``job`` filled in by the sender."""
    if feed.kind == "history":
        return {"type": "history", "position": envelope["position"], "envelope": envelope, "job": row}
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
