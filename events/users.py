"""Events of the User aggregate."""

from __future__ import annotations

from typing import Any, ClassVar

from events.base import CreatedEvent, DomainEvent

#: Roles a user may hold, most powerful first.
ROLES: tuple[str, ...] = ("admin", "editor", "viewer")


class UserCreated(CreatedEvent):
    """A user was created (no signup: by an admin, the CLI or the bootstrap admin)."""

    username: str
    role: str
    email: str | None
    password_hash: str

    redacted_fields: ClassVar[tuple[str, ...]] = ("password_hash",)


class UserUpdated(DomainEvent):
    """Profile fields changed: ``changes`` maps ``email`` and/or ``role`` to new values."""

    changes: dict[str, Any]


class UserDeactivated(DomainEvent):
    """The user can no longer log in; every token of theirs stops working."""


class UserReactivated(DomainEvent):
    """The user may log in again (old tokens stay revoked)."""


class UserPasswordChanged(DomainEvent):
    """A new password; tokens issued before it stop working, except the session
    ``kept_session`` (the refresh-token id of the request that changed it, if any)."""

    password_hash: str
    kept_session: str | None

    redacted_fields: ClassVar[tuple[str, ...]] = ("password_hash",)


class UserLoggedOut(DomainEvent):
    """A refresh token (``session`` = its id) and the access tokens issued from it were revoked."""

    session: str
