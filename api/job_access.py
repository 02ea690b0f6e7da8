"""A job's read-model rows as the current user may see them: the job, its result and the
result's log lines, shared by the job, result and history routes (so no router imports
another for them). The queries are :mod:`projections.queries.jobs`'."""

from __future__ import annotations

from typing import Any

from api.deps import Services
from api.views import log_json, result_json
from commands.errors import NotFound
from projections import queries
from projections.queries import Viewer

#: how many log lines a result carries
RESULT_LOG_LINES = 1000


def load_job(services: Services, user: Viewer, job_id: str) -> dict[str, Any]:
    """A visible job's row. Raises NotFound."""
    row = queries.job_by_id(services.engine, job_id, user)
    if row is None:
        raise NotFound(f"no job {job_id}")
    return row


def result_row(services: Services, job_id: str) -> dict[str, Any]:
    """The result row of a job. Raises NotFound until it has one."""
    row = queries.result_of_job(services.engine, job_id)
    if row is None:
        raise NotFound(f"job {job_id} has no result")
    return row


def result_of(services: Services, job_id: str, user: Viewer) -> dict[str, Any]:
    """The contract's result shape of a job (logs: its first 1,000 lines), its links signed for ``user``."""
    row = result_row(services, job_id)
    logs = queries.first_log_lines(services.engine, job_id, RESULT_LOG_LINES)
    return result_json(row, [log_json(r) for r in logs], services.signer.for_user(user))
