"""Who may act on what (API.md, *General*): admins everything; editors their own
resources; viewers read only. Not seeing a resource is NotFound, not Forbidden."""

from __future__ import annotations

from commands.context import Actor
from commands.errors import Forbidden, NotFound


def require_admin(actor: Actor, what: str = "this") -> None:
    """Raises Forbidden unless ``actor`` is an admin (or a processor)."""
    if not actor.is_admin:
        raise Forbidden(f"only admins may do {what}")


def require_writer(actor: Actor) -> None:
    """Raises Forbidden for viewers."""
    if actor.role not in ("admin", "editor", "processor"):
        raise Forbidden("viewers have read-only access")


def require_owner(actor: Actor, owner_id: str, what: str, resource_id: object) -> None:
    """Editors act on their own resources only; viewers on none.

    Raises Forbidden (viewer, who may see it) or NotFound (another editor's resource).
    """
    if actor.is_admin:
        return
    require_writer(actor)
    if owner_id != actor.id:
        raise NotFound(f"no {what} {resource_id}")


def require_visible_job(actor: Actor, job_id: object, archived: bool) -> None:
    """An archived job is hidden from people (admins too); processors still see it.

    Raises NotFound."""
    if archived and actor.role != "processor":
        raise NotFound(f"no job {job_id}")
