"""The webhook dispatcher itself: the recorder (:mod:`infra.dispatcher.recorder`), the
claims (:mod:`infra.dispatcher.claims`), the sender threads (:mod:`infra.dispatcher.sender`)
and the one writer thread that records their attempts, run as one elected role."""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select

from commands.service import Platform
from infra.dispatcher import claims
from infra.dispatcher.recorder import DeliveryRecorder
from infra.dispatcher.sender import AttemptResult, Sender
from infra.leadership import Leadership, lead_forever
from projections import webhooks as w
from projections.failures import describe
from projections.follow import NotificationSource, StoreWaiter

log = logging.getLogger(__name__)


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
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook-sender")
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._results: queue.Queue[tuple[dict[str, Any], AttemptResult]] = queue.Queue()
        self._writer_stop = threading.Event()
        self.lease_s = sender.timeout_s + 30.0  # its tables: by the schema step (infra.schema)
        self.recorder = DeliveryRecorder(engine, platform, batch_size=batch_size, public_url=self.public_url)

    # -- recording ---------------------------------------------------------------------------

    def position(self) -> int:
        """The last position the recorder committed."""
        return self.recorder.position()

    def record_once(self) -> int:
        """Turn the next batch of stored events into deliveries, committing them with the
        tracked position; returns how many events were read."""
        return self.recorder.record_once()

    # -- sending -------------------------------------------------------------------------------

    def claim_due(self, limit: int) -> list[dict[str, Any]]:
        """Lease up to ``limit`` due deliveries of enabled targets (skipping rows another
        sender holds), with what signing needs (:func:`infra.dispatcher.claims.claim_due`)."""
        return claims.claim_due(self.engine, self.platform, limit, self.lease_s)

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
        """Record attempts in one transaction and disable the endpoints failing for
        ``disable_after_s`` (:func:`infra.dispatcher.claims.record_results`)."""
        claims.record_results(self.engine, self.platform, batch, schedule_s=self.schedule_s, disable_after_s=self.disable_after_s)

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
