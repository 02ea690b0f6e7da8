"""The outbox relay: follows the store's notification log from its tracked position,
publishes each event to Kafka, and records its position only after the broker
acknowledged (at-least-once; consumers dedupe by aggregate id + version). An event it
cannot decode is parked in ``projection_failures`` (name ``relay``) and skipped.

It also runs the reconciler: jobs pending past ``requeue_after_s`` have their work
published again (Kafka delivers, it does not remember; the claim makes duplicates harmless),
and the lease reaper.

Several relays may run (ARCHITECTURE.md invariant 12): only the one holding the ``relay``
leadership (:mod:`infra.leadership`) publishes, reaps and reconciles; the others stand by
and take over within about a second of its death (``kill -9`` included), resuming from the
tracked position. The leader checks it still leads before each batch, so a deposed leader
stops; what it sent between losing the lock and that check is at most one batch, published
again by the new leader (at-least-once). Recording a position never moves it backwards, so a
late write of a deposed leader cannot make the new one repeat more.

The reaper and reconciler share the relay's lock rather than having their own: the
reconciler publishes through the relay's producer, both are cheap, and one elected process
per deployment for "the things that must be single" keeps failover one story.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError
from sqlalchemy import BigInteger, Column, DateTime, Engine, MetaData, String, Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from events import JobDeadLettered, JobRetried, JobSubmitted, to_envelope
from infra.db import conninfo
from infra.kafka import dead_letter_topic, events_topic, make_producer, work_topic
from infra.leadership import Leadership, lead_forever
from projections import failures
from projections import tables as rm
from projections.follow import NotificationSource, StoreWaiter

log = logging.getLogger(__name__)

metadata = MetaData()
relay_tracking = Table(
    "relay_tracking",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def work_message(job_id: str, job_type: str, version: int, position: int, priority: str) -> dict[str, Any]:
    """The work message of a pending job: ``{job_id, type, version, position, priority}``."""
    return {"job_id": job_id, "type": job_type, "version": version, "position": position, "priority": priority}


class OutboxRelay:
    """Publishes stored events to Kafka in store order.

    Args:
        engine: SQLAlchemy engine of the store's database (tracking table lives there).
        source: the store's recorder; ``decode`` its mapper's ``to_domain_event``.
        bootstrap: Kafka bootstrap servers; ``prefix``: topic prefix.
        leadership: the lock :meth:`run_forever` publishes under (default: ``relay`` on
            ``engine``'s database).
    """

    name = "outbox_relay"

    def __init__(
        self,
        engine: Engine,
        source: NotificationSource,
        decode: Any,
        bootstrap: str,
        *,
        prefix: str = "aiorch",
        waiter: StoreWaiter | None = None,
        batch_size: int = 500,
        poll_interval_s: float = 0.5,
        requeue_after_s: float = 30.0,
        reconcile_interval_s: float = 10.0,
        reaper: Callable[[], int] | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.engine, self.source, self.decode, self.bootstrap = engine, source, decode, bootstrap
        self.prefix, self.waiter, self.batch_size = prefix, waiter, batch_size
        self.poll_interval_s, self.requeue_after_s = poll_interval_s, requeue_after_s
        self.reconcile_interval_s = reconcile_interval_s
        self.reaper = reaper
        self.leadership = leadership or Leadership(conninfo(engine.url.render_as_string(hide_password=False)), "relay")
        self._backoff = 0.2
        self._producer: Any = None
        self._stop = threading.Event()
        self._last_reconcile = 0.0
        self.published = 0  # its table: by the schema step (infra.schema)

    # -- position ------------------------------------------------------------------------

    def position(self) -> int:
        """The last position the broker acknowledged."""
        with self.engine.connect() as conn:
            return conn.execute(select(relay_tracking.c.position).where(relay_tracking.c.name == self.name)).scalar() or 0

    def _record(self, position: int) -> None:
        stmt = pg_insert(relay_tracking).values(name=self.name, position=position, updated_at=datetime.now(UTC))
        with self.engine.begin() as conn:
            conn.execute(
                stmt.on_conflict_do_update(  # never backwards (a deposed leader's late write)
                    index_elements=["name"],
                    set_={
                        "position": func.greatest(relay_tracking.c.position, stmt.excluded.position),
                        "updated_at": stmt.excluded.updated_at,
                    },
                )
            )

    # -- publishing ----------------------------------------------------------------------

    def _get_producer(self) -> Any:
        if self._producer is None:
            self._producer = make_producer(self.bootstrap)
        return self._producer

    def _reset_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:
                log.debug("closing producer failed", exc_info=True)
            self._producer = None

    def run_once(self) -> int:
        """Publish one batch after the tracked position; returns how many events.

        Raises:
            KafkaError: the broker did not acknowledge (nothing is recorded; the batch is
            published again next time).
        """
        start = self.position()
        notifications = self.source.select_notifications(start, self.batch_size, inclusive_of_start=False)
        if not notifications:
            return 0
        producer = self._get_producer()
        futures = []
        for n in notifications:
            try:
                futures += [producer.send(topic, key=key, value=value) for topic, key, value in self._messages(n)]
            except KafkaError:
                raise
            except Exception as exc:  # noqa: BLE001 - nothing stored may stop the relay
                self._park(n, exc)
        self._await_acks(producer, futures)
        self._record(notifications[-1].id)
        self.published += len(notifications)
        return len(notifications)

    def _await_acks(self, producer: Any, futures: list[Any], timeout_s: float = 15.0) -> None:
        """Wait up to ``timeout_s`` seconds for the broker to acknowledge ``futures``, in
        slices of 0.5 s so that :meth:`stop` is honoured within about half a second even
        while the broker is down.

        Raises:
            KafkaTimeoutError: the broker did not acknowledge in time, or the relay is stopping.
            KafkaError: the broker refused a message.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                producer.flush(timeout=0.5)
                break
            except KafkaTimeoutError:
                if self._stop.is_set():
                    raise KafkaTimeoutError("the relay is stopping; the batch is published again later") from None
                if time.monotonic() >= deadline:
                    raise
        for f in futures:
            f.get(timeout=max(0.1, deadline - time.monotonic()))  # raises if the broker refused

    def _messages(self, n: Any) -> list[tuple[str, str, dict[str, Any]]]:
        """``[(topic, key, value)]`` to publish for stored notification ``n``: its envelope,
        plus its work (submitted, retried) or dead letter. Raises whatever decoding raises."""
        event = self.decode(n)
        envelope = to_envelope(event, n.id)
        key = envelope["aggregate_id"]
        out = [(events_topic(self.prefix), key, envelope)]
        if isinstance(event, JobDeadLettered):
            letter = {
                **work_message(key, event.type, event.originator_version, n.id, "normal"),
                "code": event.code,
                "message": event.message,
                "attempts": event.attempts,
            }
            out.append((dead_letter_topic(self.prefix), key, letter))
        if isinstance(event, (JobSubmitted, JobRetried)) and not getattr(event, "demo", False):
            msg = work_message(key, event.type, event.originator_version, n.id, event.priority)
            out.append((work_topic(self.prefix, event.type), key, msg))
        return out

    def _park(self, n: Any, exc: BaseException) -> None:
        """Record the notification the relay cannot publish (``projection_failures``, name
        ``relay``) and log it at ERROR; the relay goes on without it."""
        error = failures.describe(exc)
        with self.engine.begin() as conn:
            failures.park(conn, failures.RELAY, n.id, n.topic, error)
        log.error("the relay parked the event at position %s (%s): %s", n.id, n.topic, error)
        log.debug("the parked event's traceback", exc_info=exc)

    def publish_one(self, position: int) -> None:
        """Publish the stored event at ``position`` now and wait for the broker (an
        operator's retry of a parked event).

        Raises:
            LookupError: no event is stored there. KafkaError: the broker refused.
            Exception: whatever decoding it raises.
        """
        found = self.source.select_notifications(position, 1, stop=position)
        if not found or found[0].id != position:
            raise LookupError(f"no stored event at position {position}")
        producer = self._get_producer()
        futures = [producer.send(topic, key=key, value=value) for topic, key, value in self._messages(found[0])]
        self._await_acks(producer, futures)

    def reconcile(self) -> int:
        """Publish work again for jobs pending longer than ``requeue_after_s``; returns how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.requeue_after_s)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(rm.jobs.c.id, rm.jobs.c.type, rm.jobs.c.version, rm.jobs.c.position, rm.jobs.c.priority)
                .where(
                    rm.jobs.c.status == "pending",
                    rm.jobs.c.updated_at < cutoff,
                    rm.jobs.c.archived.is_(False),
                    rm.jobs.c.demo.is_(False),
                )
                .limit(1000)
            ).all()
        if not rows:
            return 0
        producer = self._get_producer()
        futures = [
            producer.send(
                work_topic(self.prefix, r.type), key=r.id, value=work_message(r.id, r.type, r.version, r.position, r.priority)
            )
            for r in rows
        ]
        self._await_acks(producer, futures)
        log.info("reconciler published work again for %d pending jobs", len(rows))
        return len(rows)

    def run_forever(self) -> None:
        """Relay until :meth:`stop` while this instance leads (standing by otherwise),
        backing off and reconnecting on broker errors."""
        try:
            lead_forever(self.leadership, self._stop, self.step)
        finally:
            self._reset_producer()

    def step(self) -> float:
        """One unit of the leader's work: a batch, and the reaper and reconciler when due.
        Returns the seconds to wait before the next (0 once it has waited for the store)."""
        try:
            n = self.run_once()
            if time.monotonic() - self._last_reconcile > self.reconcile_interval_s:
                self._last_reconcile = time.monotonic()
                if self.reaper is not None:
                    self.reaper()
                self.reconcile()
            self._backoff = 0.2
        except KafkaError as exc:
            wait, self._backoff = self._backoff, min(self._backoff * 2, 5.0)
            log.warning("broker unavailable (%s); retrying in %.1f s", exc, wait)
            self._reset_producer()
            return wait
        except Exception:
            log.exception("relay failed; retrying")
            self._reset_producer()
            return 1.0
        if n == self.batch_size:
            return 0.0
        if self.waiter is None:
            return self.poll_interval_s
        self.waiter.wait(self.poll_interval_s)
        return 0.0

    def close(self) -> None:
        """Close the Kafka producer (a new one is made on the next publish)."""
        self._reset_producer()

    def stop(self) -> None:
        """Ask :meth:`run_forever` to return after its current batch."""
        self._stop.set()
