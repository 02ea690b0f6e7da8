"""Which pending job a processor claims, and when: the claim policy.

- **Priority.** ``high`` before ``normal`` before ``low`` (:data:`CLAIM_ORDER`, the claim
  ordering, from :class:`events.enums.Priority`'s rank): stale work is taken most urgent first, and a work
  message for a job gives way to an older pending job of a higher priority.
- **Backoff.** A job retried with a backoff (its ``not_before``) is not claimed before it is
  due (:func:`is_due`); the processor keeps the hint and tries again later.
- **Per-owner slots.** An owner whose ``max_concurrent_jobs`` run already waits: the claims
  of one owner are serialised across processors (:class:`OwnerLocks`), and after a claim the
  lock is held until the read models include it, so the next claimer counts it.

The policy reads the read models through :class:`WorkQueries` (wired in ``infra``), never
through SQL of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from events.enums import Priority

#: the claim ordering, most urgent first (:class:`events.enums.Priority` by rank, descending)
CLAIM_ORDER: tuple[Priority, ...] = tuple(sorted(Priority, key=lambda p: p.rank, reverse=True))
#: seconds a claimer holds its owner's lock waiting for the read models to show its claim
CLAIM_VISIBLE_WAIT_S = 5.0

WorkMessage = dict[str, Any]
"""A work message: ``{job_id, type, version, position?, priority?, preferred?}``."""


def claim_rank(priority: str) -> int:
    """``priority``'s place in :data:`CLAIM_ORDER` (0 first); unknown priorities rank last."""
    return CLAIM_ORDER.index(Priority(priority)) if priority in CLAIM_ORDER else len(CLAIM_ORDER)


def higher_priorities(priority: str) -> list[Priority]:
    """The priorities claimed before ``priority`` (an unknown one counts as ``normal``,
    :meth:`events.enums.Priority.rank_of`), most urgent first; [] for ``high``."""
    return [p for p in CLAIM_ORDER if p.rank > Priority.rank_of(priority)]


def is_due(not_before: str | None, now: datetime | None = None) -> bool:
    """Whether a job whose retry backoff ends at ``not_before`` (ISO 8601 with a zone, or
    None for no backoff) may be claimed at ``now`` (default: the current UTC time)."""
    if not not_before:
        return True
    return datetime.fromisoformat(not_before) <= (now or datetime.now(UTC))


def has_free_slot(max_concurrent_jobs: int, running: int) -> bool:
    """Whether an owner running ``running`` jobs may start one more under its
    ``max_concurrent_jobs`` setting (0 or less: no limit)."""
    return max_concurrent_jobs <= 0 or running < max_concurrent_jobs


class WorkQueries(Protocol):
    """What the claim policy reads of the read models (``infra.work.ReadModelWork``)."""

    def oldest_pending(
        self,
        types: Sequence[str],
        *,
        priorities: Collection[str] | None = None,
        pending_for_s: float = 0.0,
        exclude: Collection[str] = (),
    ) -> WorkMessage | None:
        """The work message of the oldest pending job (not archived, not demo) of
        ``types`` and ``priorities`` (None: any), unchanged for at least ``pending_for_s``
        seconds, whose id is not in ``exclude``; None if there is none."""

    def running_jobs(self, owner_id: str) -> int:
        """How many jobs of ``owner_id`` run now."""

    def wait_projected(self, position: int, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds until the read models include the event at
        ``position``; whether they do."""

    def close(self) -> None:
        """Release what the waits hold (a LISTEN connection)."""


class OwnerLocks(Protocol):
    """A lock per owner shared by every processor (``infra.work.AdvisoryOwnerLocks``)."""

    def hold(self, owner_id: str) -> AbstractContextManager[None]:
        """Hold ``owner_id``'s lock for the ``with`` block (blocks until it is free)."""


@dataclass
class Slot:
    """The answer of :meth:`ClaimPolicy.slot`: whether the owner may start a job now, and
    (set by the claimer) the store position of its claim, to be waited for on release."""

    free: bool
    claimed_at: int | None = None


@dataclass(frozen=True)
class ClaimPolicy:
    """The claim policy of one processor.

    Args:
        queries: the read models' answers.
        limits: ``limits(owner_id)`` → the owner's effective settings
            (``max_concurrent_jobs`` is read here).
        locks: per-owner locks; None claims without serialising (a single processor).
        requeue_after_s: seconds a job stays pending before it counts as stale work.
    """

    queries: WorkQueries
    limits: Callable[[str], Mapping[str, Any]] = field(default=lambda _owner: {})
    locks: OwnerLocks | None = None
    requeue_after_s: float = 10.0

    def stale_work(self, types: Sequence[str], exclude: Collection[str] = ()) -> WorkMessage | None:
        """The most urgent job of ``types`` pending past ``requeue_after_s`` (by
        :data:`CLAIM_ORDER`, then oldest), except ``exclude``; None if there is none."""
        for priority in CLAIM_ORDER:
            found = self.queries.oldest_pending(
                types, priorities=(priority,), pending_for_s=self.requeue_after_s, exclude=exclude
            )
            if found is not None:
                return found
        return None

    def better_job(self, types: Sequence[str], priority: str, job_id: str) -> WorkMessage | None:
        """The oldest pending job of ``types`` of a priority above ``priority``, other than
        ``job_id``, to run first; None if there is none."""
        higher = higher_priorities(priority)
        if not higher:
            return None
        return self.queries.oldest_pending(types, priorities=higher, exclude=(job_id,))

    def close(self) -> None:
        """Release the queries' connections (the processor stops)."""
        self.queries.close()

    @contextmanager
    def slot(self, owner_id: str) -> Iterator[Slot]:
        """Serialise ``owner_id``'s claims and say whether it runs fewer jobs than its
        ``max_concurrent_jobs``. A claimer that sets :attr:`Slot.claimed_at` keeps the lock
        until the read models include that position (≤ :data:`CLAIM_VISIBLE_WAIT_S` s)."""
        with self.locks.hold(owner_id) if self.locks is not None else _no_lock():
            limit = int(self.limits(owner_id).get("max_concurrent_jobs") or 0)
            slot = Slot(free=limit <= 0 or has_free_slot(limit, self.queries.running_jobs(owner_id)))
            yield slot
            if slot.claimed_at is not None and self.locks is not None:
                self.queries.wait_projected(slot.claimed_at, CLAIM_VISIBLE_WAIT_S)


@contextmanager
def _no_lock() -> Iterator[None]:
    yield
