"""Queries over the read models shared by the API and the composition root."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, or_, select

from projections import tables as t


def effective_settings(engine: Engine, user_id: str | None, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` ← global settings ← ``user_id``'s settings, as a flat dict."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.settings.c.key, t.settings.c.value, t.settings.c.user_id).where(
                t.settings.c.deleted.is_(False),
                or_(t.settings.c.user_id.is_(None), t.settings.c.user_id == user_id),
            )
        ).all()
    values = dict(defaults)
    values.update({r.key: r.value for r in rows if r.user_id is None})
    values.update({r.key: r.value for r in rows if r.user_id is not None})
    return values


def open_job_ids(engine: Engine, project_id: str) -> list[str]:
    """Ids of the project's pending and running jobs."""
    with engine.connect() as conn:
        return [
            r.id
            for r in conn.execute(
                select(t.jobs.c.id).where(t.jobs.c.project_id == project_id, t.jobs.c.status.in_(("pending", "running")))
            )
        ]


def running_jobs(engine: Engine, owner_id: str) -> int:
    """How many jobs of ``owner_id`` run now."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(t.jobs).where(t.jobs.c.created_by_id == owner_id, t.jobs.c.status == "running")
            ).scalar_one()
        )


__all__ = ["effective_settings", "open_job_ids", "running_jobs"]
