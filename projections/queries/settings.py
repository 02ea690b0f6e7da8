"""The settings a user works under."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, or_, select

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


__all__ = ["effective_settings"]
