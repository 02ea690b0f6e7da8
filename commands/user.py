"""The User aggregate. Its id is derived from the username, so usernames are unique."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import event

from commands.aggregate import PlatformAggregate
from commands.errors import Conflict
from events.users import (
    UserCreated,
    UserDeactivated,
    UserLoggedOut,
    UserPasswordChanged,
    UserReactivated,
    UserUpdated,
)

_USER_NAMESPACE = uuid.UUID("a4b6f2d1-52a9-4f9a-8f0f-3d0b6f3c0d21")


def user_id_for(username: str) -> uuid.UUID:
    """The id of the user called ``username`` (UUID 5 of the lower-cased name)."""
    return uuid.uuid5(_USER_NAMESPACE, username.strip().lower())


class User(PlatformAggregate):
    """A person who logs in: ``role`` is admin, editor or viewer."""

    UserCreated = UserCreated
    UserUpdated = UserUpdated
    UserDeactivated = UserDeactivated
    UserReactivated = UserReactivated
    UserPasswordChanged = UserPasswordChanged
    UserLoggedOut = UserLoggedOut

    @staticmethod
    def create_id(username: str) -> uuid.UUID:
        """Deterministic id: a second user with the same name conflicts in the store."""
        return user_id_for(username)

    @event(UserCreated)
    def __init__(self, username: str, role: str, email: str | None, password_hash: str) -> None:
        self.username = username
        self.role = role
        self.email = email
        self.password_hash = password_hash
        self.is_active = True

    def update(self, changes: dict[str, Any]) -> None:
        """Change ``email`` and/or ``role`` (only fields that differ are recorded)."""
        real = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if real:
            self._updated(changes=real)

    def deactivate(self) -> None:
        """Stop the user from logging in. Raises Conflict if already inactive."""
        if not self.is_active:
            raise Conflict(f"user {self.username} is already inactive")
        self._deactivated()

    def reactivate(self) -> None:
        """Let the user log in again. Raises Conflict if active."""
        if self.is_active:
            raise Conflict(f"user {self.username} is already active")
        self._reactivated()

    def change_password(self, password_hash: str, kept_session: str | None) -> None:
        """Set a new password hash; other sessions stop working."""
        self._password_changed(password_hash=password_hash, kept_session=kept_session)

    def log_out(self, session: str) -> None:
        """Revoke one session (a refresh token and its access tokens)."""
        self._logged_out(session=session)

    @event(UserUpdated)
    def _updated(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            setattr(self, key, value)

    @event(UserDeactivated)
    def _deactivated(self) -> None:
        self.is_active = False

    @event(UserReactivated)
    def _reactivated(self) -> None:
        self.is_active = True

    @event(UserPasswordChanged)
    def _password_changed(self, password_hash: str, kept_session: str | None) -> None:
        self.password_hash = password_hash

    @event(UserLoggedOut)
    def _logged_out(self, session: str) -> None:
        pass
