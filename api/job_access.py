"""A job's read-model row as the current user may see it, shared by the job routes (so no
router imports another for it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from api.deps import Services
from api.views import visible_jobs
from commands.errors import NotFound
from projections import tables as t


def load_job(services: Services, user: dict[str, Any], job_id: str) -> dict[str, Any]:
    """A visible job's row. Raises NotFound."""
    with services.engine.connect() as conn:
        row = conn.execute(visible_jobs(select(t.jobs), user).where(t.jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise NotFound(f"no job {job_id}")
    return dict(row)
