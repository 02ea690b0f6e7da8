"""The users read model (``rm_users``) and the revoked sessions (``rm_revoked_sessions``)."""

from __future__ import annotations

from functools import singledispatch, singledispatchmethod

from sqlalchemy import Connection

from events import (
    DomainEvent,
    UserCreated,
    UserDeactivated,
    UserLoggedOut,
    UserPasswordChanged,
    UserReactivated,
    UserUpdated,
)
from projections.readmodels.base import ReadModel, Row, insert_new, touch, touched

#: the user columns a ``UserUpdated`` may change
EDITABLE = ("email", "role")
#: the events that change an existing user's row
UserChange = UserUpdated | UserDeactivated | UserReactivated | UserPasswordChanged


def user_created(event: UserCreated, position: int) -> Row:
    """The row of a new user: active, no tokens revoked yet."""
    return {
        "id": str(event.originator_id),
        "username": event.username,
        "email": event.email,
        "role": event.role,
        "is_active": True,
        "password_hash": event.password_hash,
        "created_at": event.timestamp,
        "updated_at": event.timestamp,
        "position": position,
    }


@singledispatch
def user_changes(event: DomainEvent) -> Row:
    """The user columns ``event`` sets. Raises TypeError for an event of no user change."""
    raise TypeError(f"{type(event).__name__} changes no user")


@user_changes.register
def _(event: UserUpdated) -> Row:
    return {k: v for k, v in event.changes.items() if k in EDITABLE}


@user_changes.register
def _(event: UserDeactivated) -> Row:
    return {"is_active": False}


@user_changes.register
def _(event: UserReactivated) -> Row:
    return {"is_active": True, "tokens_valid_after": event.timestamp, "kept_session": None}


@user_changes.register
def _(event: UserPasswordChanged) -> Row:
    return {"password_hash": event.password_hash, "tokens_valid_after": event.timestamp, "kept_session": event.kept_session}


def user_row(row: Row | None, event: DomainEvent, position: int) -> Row:
    """The user row after ``event`` (pure). Raises ValueError for a change before creation."""
    if isinstance(event, UserCreated):
        return row if row is not None else user_created(event, position)
    if row is None:
        raise ValueError(f"{type(event).__name__} of user {event.originator_id} before its UserCreated")
    return touched(row, event, position, user_changes(event))


def revoked_session(event: UserLoggedOut) -> Row:
    """The ``rm_revoked_sessions`` row of a logout."""
    return {"session": event.session, "user_id": str(event.originator_id), "revoked_at": event.timestamp}


class UsersProjection(ReadModel):
    """``rm_users``: one row per user."""

    handles = (UserCreated, UserUpdated, UserDeactivated, UserReactivated, UserPasswordChanged)

    @singledispatchmethod
    def process_event(self, event: DomainEvent, conn: Connection, position: int) -> None:
        """Other events change no user."""

    @process_event.register
    def _(self, event: UserCreated, conn: Connection, position: int) -> None:
        insert_new(conn, self.t.users, user_created(event, position))

    @process_event.register
    def _(self, event: UserChange, conn: Connection, position: int) -> None:
        touch(conn, self.t.users, event, position, user_changes(event))


class SessionsProjection(ReadModel):
    """``rm_revoked_sessions``: the sessions users logged out of."""

    handles = (UserLoggedOut,)

    @singledispatchmethod
    def process_event(self, event: DomainEvent, conn: Connection, position: int) -> None:
        """Other events revoke no session."""

    @process_event.register
    def _(self, event: UserLoggedOut, conn: Connection, position: int) -> None:
        insert_new(conn, self.t.revoked_sessions, revoked_session(event))


__all__ = ["SessionsProjection", "UsersProjection", "revoked_session", "user_changes", "user_created", "user_row"]
