"""Reading a job's past from the event store: the store-history reader of a request's
services, and ``?as_of=`` — the job row folded (:func:`projections.readmodels.job_row.job_row`)
from its events up to a global position or an ISO 8601 time, SQL bounding what is read, from
the nearest in-memory checkpoint (:class:`projections.history.JobCheckpoints`)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from api.deps import Services
from api.errors import InvalidRequest
from commands.errors import NotFound
from projections.history import StoreHistory
from projections.readmodels.job_row import JobRow

MAX_AS_OF_CHARS = 64  # the longest ISO 8601 time is about 35 characters
MAX_POSITION = 2**63 - 1  # positions are PostgreSQL bigints


def store_history(services: Services) -> StoreHistory:
    """The reader of the event store's per-aggregate history (SQL bounded, see
    :class:`projections.history.StoreHistory`)."""
    platform = services.platform
    return StoreHistory.of_store(services.engine, platform.recorder, platform.mapper)


def parse_as_of(as_of: str) -> int | datetime:
    """``as_of`` as a global position (ASCII digits) or an aware time (ISO 8601).

    Raises InvalidRequest (unparsable, or a time without a zone).
    """
    bad = InvalidRequest(
        "as_of must be a position or an ISO 8601 time",
        errors=[{"loc": ["query", "as_of"], "msg": "not a position or time"}],
    )
    if len(as_of) > MAX_AS_OF_CHARS or not as_of.isascii():
        raise bad
    if as_of.isdigit():
        return int(as_of)  # ASCII digits only ("²" is a digit to str.isdigit), ≤ 64 of them
    try:
        when = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
    except ValueError:
        raise bad from None
    if when.tzinfo is None:
        raise InvalidRequest("as_of needs a time zone", errors=[{"loc": ["query", "as_of"], "msg": "add Z or +00:00"}])
    return when


def fold_as_of(services: Services, job_id: UUID, as_of: str) -> JobRow:
    """The job row folded (:func:`projections.readmodels.job_row.job_row`) from its events
    up to a global position or an ISO 8601 time; SQL bounds the events read.

    Raises InvalidRequest (unparsable ``as_of``), NotFound (the job did not exist then).
    """
    point = parse_as_of(as_of)
    history = store_history(services)
    if isinstance(point, int):
        version = history.version_at(job_id, min(point, MAX_POSITION))
    else:
        version = history.version_at_time(job_id, point)
    if version == 0:
        raise NotFound(f"job {job_id} did not exist then")
    return services.checkpoints.job_at(history, job_id, version)
