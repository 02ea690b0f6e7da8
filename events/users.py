"""Events of the User aggregate."""

from __future__ import annotations

from typing import ClassVar

from events.base import CreatedEvent

#: Roles a user may hold, most powerful first.
ROLES: tuple[str, ...] = ("admin", "editor", "viewer")


class UserCreated(CreatedEvent):
    """A user was created (no signup: by an admin, the CLI or the bootstrap admin)."""

    username: str
    role: str
    email: str | None
    password_hash: str

    redacted_fields: ClassVar[tuple[str, ...]] = ("password_hash",)
