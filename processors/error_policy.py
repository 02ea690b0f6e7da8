"""The processor's per-message error policy (quix-streams' ``on_processing_error``): what
becomes of a Kafka record whose handling raised.

- **Transient** (:func:`is_transient`: the store or the network is unreachable, a pool
  timed out): the record is delivered again after a backoff, for as long as it takes; an
  outage never skips work.
- **Poison** (:func:`is_poison`: the record is malformed, the command refuses it, a value
  is of the wrong shape): it never will succeed, so it is dead-lettered at once — logged
  with topic, partition and offset, counted, recorded in ``invalid_messages`` with a bounded
  excerpt of its value — and its offset committed.
- **Anything else** is retried up to ``max_attempts`` deliveries, then dead-lettered: nothing
  loops forever on one record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import psycopg
import sqlalchemy.exc
from eventsourcing import persistence
from prometheus_client import Counter

from commands.errors import DomainError
from processors.work_messages import InvalidWorkMessage

log = logging.getLogger(__name__)

#: bytes of a record's value kept in ``invalid_messages`` (1 KiB)
EXCERPT_BYTES = 1024
#: exceptions of an unreachable store or network: retried, never skipped
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError, socket errors, TimeoutError
    persistence.OperationalError,  # eventsourcing's wrapping of psycopg's (ConnectionUnavailableError too)
    persistence.InterfaceError,
    psycopg.OperationalError,  # psycopg_pool.PoolTimeout too
    psycopg.InterfaceError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,  # the pool had no connection to give
)
#: exceptions a record causes every time it is handled: dead-lettered at once
POISON: tuple[type[BaseException], ...] = (InvalidWorkMessage, DomainError, ValueError, TypeError, LookupError, AttributeError)


class Verdict(StrEnum):
    """What the consumer does with a record whose handling raised."""

    RETRY = "retry"  # seek back to it, wait, deliver it again; nothing committed
    DEAD_LETTER = "dead_letter"  # record it in invalid_messages, commit past it


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes (``raise ... from``, or the context it was raised in), ≤ 10."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the store or the network is
    unreachable for now; a SQLAlchemy error that invalidated its connection counts too."""
    for e in _chain(exc):
        if isinstance(e, TRANSIENT):
            return True
        if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
            return True
    return False


def is_poison(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the record itself (it would fail on every delivery)."""
    return not is_transient(exc) and isinstance(exc, POISON)


@dataclass(frozen=True)
class ErrorPolicy:
    """The decision (see the module) and the backoff between deliveries of one record.

    Args:
        max_attempts: deliveries of a record failing with neither a transient nor a poison
            error before it is dead-lettered.
        backoff_s: the wait after the first failure (seconds); doubled per failure...
        backoff_cap_s: ...up to this.
    """

    max_attempts: int = 3
    backoff_s: float = 0.5
    backoff_cap_s: float = 10.0

    def decide(self, exc: BaseException, attempts: int) -> Verdict:
        """The verdict on a record whose ``attempts``-th delivery (1 = the first) raised
        ``exc``."""
        if is_transient(exc):
            return Verdict.RETRY
        if is_poison(exc) or attempts >= self.max_attempts:
            return Verdict.DEAD_LETTER
        return Verdict.RETRY

    def delay_s(self, attempts: int) -> float:
        """Seconds to wait before delivering a record again after its ``attempts``-th failure."""
        return float(min(self.backoff_cap_s, self.backoff_s * 2 ** max(attempts - 1, 0)))


@dataclass(frozen=True)
class InvalidMessage:
    """A dead-lettered record: where it was (topic, partition, offset), why it failed, the
    first :data:`EXCERPT_BYTES` bytes of its value, and when it was recorded (UTC)."""

    topic: str
    partition: int
    offset: int
    error: str
    excerpt: bytes
    recorded_at: datetime

    @classmethod
    def of(cls, record: Any, exc: BaseException) -> InvalidMessage:
        """The dead letter of a Kafka ``record`` (``topic``, ``partition``, ``offset``,
        ``value``: bytes, str, a decoded value or None) that raised ``exc``."""
        return cls(record.topic, record.partition, record.offset, describe(exc), excerpt(record.value), datetime.now(UTC))


def describe(exc: BaseException) -> str:
    """``"<type>: <message>"`` of ``exc``, at most 2000 characters."""
    return f"{type(exc).__name__}: {exc}"[:2000]


def excerpt(value: object) -> bytes:
    """The first :data:`EXCERPT_BYTES` bytes of a record's value (UTF-8 for a str, its
    ``repr`` for anything else that is not bytes; None gives b"")."""
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value[:EXCERPT_BYTES])
    text = value if isinstance(value, str) else repr(value)
    return text.encode("utf-8", "backslashreplace")[:EXCERPT_BYTES]


class InvalidMessageLog(Protocol):
    """Where dead-lettered records are kept (``infra.invalid_messages.InvalidMessageTable``)."""

    def record(self, message: InvalidMessage) -> None:
        """Keep ``message`` (once per topic, partition and offset). Raises what the store
        raises when it is unreachable (the consumer then retries the record)."""


class RecordErrors:
    """A consumer's :class:`ErrorPolicy` at work: counts the deliveries of the failing record,
    logs topic, partition and offset, records and counts dead letters.

    Args:
        policy: the decisions and backoffs.
        invalid: where dead letters are recorded (None: logged and counted only).
        consumer_id: names the consumer in the log.
    """

    def __init__(self, policy: ErrorPolicy, invalid: InvalidMessageLog | None, consumer_id: str) -> None:
        self.policy, self.invalid, self.consumer_id = policy, invalid, consumer_id
        self._failing: tuple[tuple[str, int, int], int] | None = None  # (topic, partition, offset), deliveries
        #: dead-lettered records by topic (``aiorch_invalid_messages_total``)
        self.counter = Counter("aiorch_invalid_messages", "Kafka records dead-lettered as invalid", ["topic"], registry=None)

    def succeeded(self) -> None:
        """The record in hand was handled: the next failure is a first delivery."""
        self._failing = None

    def on_processing_error(self, record: Any, exc: BaseException, wait: Callable[[float], object]) -> bool:
        """Apply the policy to ``record`` (``topic``, ``partition``, ``offset``, ``value``),
        whose handling raised ``exc``. Retry: log, ``wait(backoff_s)``, answer False (do not
        commit; seek back). Dead letter: log, record, count, answer True (commit past it);
        a dead letter that cannot be recorded (the store is down) is retried instead."""
        where = (record.topic, record.partition, record.offset)
        deliveries = self._failing[1] + 1 if self._failing and self._failing[0] == where else 1
        self._failing = (where, deliveries)
        if self.policy.decide(exc, deliveries) is Verdict.RETRY:
            log.warning(
                "%s: record topic=%s partition=%d offset=%d failed (delivery %d: %s); retrying",
                self.consumer_id, *where, deliveries, describe(exc), exc_info=deliveries == 1,
            )  # fmt: skip
            wait(self.policy.delay_s(deliveries))
            return False
        log.error(
            "%s: invalid record topic=%s partition=%d offset=%d (%s): dead-lettered, committed past",
            self.consumer_id, *where, describe(exc),
        )  # fmt: skip
        try:
            if self.invalid is not None:
                self.invalid.record(InvalidMessage.of(record, exc))
        except Exception:
            log.warning(
                "%s: the invalid record %s[%d]@%d could not be recorded; retrying", self.consumer_id, *where, exc_info=True
            )
            wait(self.policy.delay_s(deliveries))
            return False
        self.counter.labels(record.topic).inc()
        self._failing = None
        return True
