"""The lease reaper: ends the attempt of every running job whose processor was lost.

A claimed job is owned by one processor while its lease lives; heartbeats renew it (cheap
row updates, not events). A running job is **lost** when its lease expired, or when it was
claimed more than a lease ago and never got one (:func:`is_lost`). Its attempt ends as
``worker_lost`` (retryable): the job goes back to pending while attempts are left, and
fails for good on its last (the job's retry policy decides, in ``commands``).

It runs in the relay process under the relay's leadership (``infra.roles.relay``), so one
reaper acts at a time; the leases live in ``infra.leases.LeaseStore``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from commands.context import Actor, Context
from commands.errors import Conflict
from commands.messages import EndAttempt
from commands.service import Platform

log = logging.getLogger(__name__)

#: who ends a lost job's attempt (the events say so)
REAPER = Actor(id="reaper", username=None, role="processor")
#: the attempt's error code
LOST_CODE = "worker_lost"


@dataclass(frozen=True)
class Claim:
    """A running job as the lease store sees it: its id, the processor that claimed it, its
    attempt, when it started and when its lease expires (None: no lease was written)."""

    job_id: str
    processor_id: str | None
    attempt: int
    started_at: datetime | None
    lease_expires_at: datetime | None


def is_lost(claim: Claim, now: datetime, lease_s: float) -> bool:
    """Whether ``claim``'s processor counts as lost at ``now``: its lease expired, or it has
    none and started more than ``lease_s`` seconds ago (a claim gets a lease's grace to
    write its first lease)."""
    if claim.lease_expires_at is not None:
        return claim.lease_expires_at < now
    return claim.started_at is not None and claim.started_at < now - timedelta(seconds=lease_s)


class LeaseBook(Protocol):
    """The leases as the reaper needs them (``infra.leases.LeaseStore``)."""

    lease_s: float

    def suspect_claims(self, now: datetime, limit: int = 500) -> list[Claim]:
        """Running jobs (not demo) whose lease expired before ``now``, or that have none
        and started more than ``lease_s`` before it: at most ``limit``."""

    def release(self, job_id: str, processor_id: str) -> None:
        """Drop ``processor_id``'s lease of ``job_id``."""


class Reaper:
    """``reaper()`` ends the attempt of every lost job (see the module); returns how many.

    Args:
        platform: the write side (``end_attempt``).
        leases: where the leases live.
        clock: the current time (UTC; tests pass their own).
    """

    def __init__(self, platform: Platform, leases: LeaseBook, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.platform, self.leases, self.clock = platform, leases, clock

    def __call__(self) -> int:
        now = self.clock()
        lost = [c for c in self.leases.suspect_claims(now) if is_lost(c, now, self.leases.lease_s)]
        return sum(1 for claim in lost if self.end(claim))

    def end(self, claim: Claim) -> bool:
        """End ``claim``'s attempt as ``worker_lost``; False when it finished or moved on
        meanwhile (the store refused)."""
        ctx = Context(REAPER, f"reap-{claim.job_id}-{claim.attempt}")
        command = EndAttempt(
            uuid.UUID(claim.job_id),
            LOST_CODE,
            f"processor {claim.processor_id} stopped renewing its lease",
            retryable=True,
            processor_id=claim.processor_id,
            attempt=claim.attempt,
        )
        try:
            retry, _ = self.platform.end_attempt(command, ctx)
        except Conflict:
            return False
        if claim.processor_id:
            self.leases.release(claim.job_id, claim.processor_id)
        log.warning("job %s: processor %s lost; %s", claim.job_id, claim.processor_id, "retrying" if retry else "failed for good")
        return True


def reap(platform: Platform, leases: LeaseBook) -> int:
    """End the attempt of every job whose processor was lost now; returns how many."""
    return Reaper(platform, leases)()
