"""Who sees which rows: admins and viewers see every live row, editors their own."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import Select

from projections import tables as t


class Viewer(Protocol):
    """Who looks: a signed-in user (``api.deps.SignedInUser``) or a user row; read as
    ``viewer["id"]`` and ``viewer["role"]``."""

    def __getitem__(self, key: str, /) -> Any: ...


def _own_only(viewer: Viewer) -> bool:
    return bool(viewer["role"] == "editor")


def visible_projects(stmt: Select[Any], viewer: Viewer) -> Select[Any]:
    """``stmt`` (over ``rm_projects``) narrowed to the live projects ``viewer`` may see."""
    stmt = stmt.where(t.projects.c.archived.is_(False))
    return stmt.where(t.projects.c.owner_id == viewer["id"]) if _own_only(viewer) else stmt


def visible_jobs(stmt: Select[Any], viewer: Viewer) -> Select[Any]:
    """``stmt`` (over ``rm_jobs``) narrowed to the live jobs ``viewer`` may see."""
    stmt = stmt.where(t.jobs.c.archived.is_(False))
    return stmt.where(t.jobs.c.created_by_id == viewer["id"]) if _own_only(viewer) else stmt


def visible_agents(stmt: Select[Any], viewer: Viewer) -> Select[Any]:
    """``stmt`` (over ``rm_agents``) narrowed to the agents ``viewer`` may see."""
    return stmt.where(t.agents.c.owner_id == viewer["id"]) if _own_only(viewer) else stmt


__all__ = ["Viewer", "visible_agents", "visible_jobs", "visible_projects"]
