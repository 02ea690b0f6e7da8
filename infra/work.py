"""Where processors find work, over PostgreSQL: the read-model answers of the claim policy
(:class:`ReadModelWork`, a :class:`processors.claims.WorkQueries`), the per-owner claim
locks (:class:`AdvisoryOwnerLocks`) and the work the store announces (:class:`StoreWork`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.utils import get_topic
from sqlalchemy import Engine, func, select

from commands.job import Job
from commands.service import Platform
from infra.relay import work_message
from processors.claims import WorkMessage
from projections import queries
from projections.follow import StoreWaiter

#: the channel the projector NOTIFYs (its position) when it commits a batch
PROJECTED_CHANNEL = "aiorch_projected"


class ReadModelWork:
    """The claim policy's reads of the read models (see :class:`processors.claims.WorkQueries`).

    Args:
        engine: the read models' database.
        projected: reads the read models' position.
        conninfo: psycopg connection string of that database, where the projector NOTIFYs
            :data:`PROJECTED_CHANNEL` (a LISTEN connection opens on the first wait).
    """

    def __init__(self, engine: Engine, projected: Callable[[], int], conninfo: str) -> None:
        self.engine, self.projected = engine, projected
        self._waiter = StoreWaiter(conninfo, PROJECTED_CHANNEL)

    def oldest_pending(
        self,
        types: Sequence[str],
        *,
        priorities: Collection[str] | None = None,
        pending_for_s: float = 0.0,
        exclude: Collection[str] = (),
    ) -> WorkMessage | None:
        """See :meth:`processors.claims.WorkQueries.oldest_pending` (the query is
        :func:`projections.queries.oldest_pending_job`)."""
        since = datetime.now(UTC) - timedelta(seconds=pending_for_s) if pending_for_s > 0 else None
        found = queries.oldest_pending_job(self.engine, types, priorities=priorities, unchanged_since=since, exclude=exclude)
        return dict(found) if found is not None else None

    def running_jobs(self, owner_id: str) -> int:
        """See :meth:`processors.claims.WorkQueries.running_jobs`."""
        return queries.running_jobs(self.engine, owner_id)

    def wait_projected(self, position: int, timeout_s: float) -> bool:
        """Wait (≤ ``timeout_s`` s) on the projector's NOTIFY until the read models include
        ``position``, re-reading their position after each batch (and every 0.25 s, for a
        notification sent before the LISTEN began); whether they do."""
        deadline = time.monotonic() + timeout_s
        while self.projected() < position:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._waiter.notified(min(left, 0.25))
        return True

    def close(self) -> None:
        """Close the LISTEN connection."""
        self._waiter.close()


class AdvisoryOwnerLocks:
    """Per-owner claim locks shared by every processor: a PostgreSQL session advisory lock
    keyed ``hashtext('aiorch-slots:<owner id>')`` (a :class:`processors.claims.OwnerLocks`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def hold(self, owner_id: str) -> Iterator[None]:
        """Hold ``owner_id``'s lock (waiting for it) for the ``with`` block."""
        key = func.hashtext(f"aiorch-slots:{owner_id}")
        with self.engine.connect() as conn:
            conn.execute(select(func.pg_advisory_lock(key)))
            try:
                yield
            finally:
                conn.execute(select(func.pg_advisory_unlock(key)))
                conn.commit()


class StoreWork:
    """``store_work(timeout_s)`` of a processor (see :class:`processors.deps.StoreWork`):
    waits up to ``timeout_s`` seconds for the projector's NOTIFY (channel
    :data:`PROJECTED_CHANNEL`, sent when the read models commit a batch), then reads the
    ``JobSubmitted`` / ``JobRetried`` events of ``types`` stored up to the read models'
    position since its last call (one indexed range of the notification log, never before
    the position it first saw) and answers their work messages, as the relay publishes them.
    A timeout answers [] without a query, so an idle processor costs one wake-up per
    ``timeout_s``.

    It follows the read models rather than the store's own NOTIFY so that a job is claimed
    only once the read models show it pending: the answer to its submission (201 with the
    job once the read models include it) still shows it pending, and the claim's checks
    (priorities, the owner's running jobs) read read models that include it.
    """

    def __init__(self, platform: Platform, projected: Callable[[], int], conninfo: str, types: list[str]) -> None:
        self.waiter = StoreWaiter(conninfo, PROJECTED_CHANNEL)
        self.recorder, self.decode = platform.recorder, platform.mapper.to_domain_event
        self.projected = projected
        self.topics = [get_topic(Job.JobSubmitted), get_topic(Job.JobRetried)]  # as the store names them
        self.types = set(types)
        self.position: int | None = None

    def __call__(self, timeout_s: float) -> list[WorkMessage]:
        if self.position is None:
            self.position = self.projected()
        if not self.waiter.notified(timeout_s):
            return []
        head = self.projected()
        out: list[WorkMessage] = []
        while self.position < head:
            batch = self.recorder.select_notifications(
                self.position, 100, stop=head, topics=self.topics, inclusive_of_start=False
            )
            for n in batch:
                event: Any = self.decode(n)
                if event.type in self.types and not getattr(event, "demo", False):
                    out.append(work_message(str(event.originator_id), event.type, event.originator_version, n.id, event.priority))
            if len(batch) < 100:
                break
            self.position = batch[-1].id
        self.position = max(self.position, head)
        return out

    def close(self) -> None:
        """Close the LISTEN connection."""
        self.waiter.close()
