"""The User aggregate. Its id is derived from the username, so usernames are unique."""

from __future__ import annotations

import uuid

from eventsourcing.domain import event

from commands.aggregate import PlatformAggregate
from events.users import UserCreated

_USER_NAMESPACE = uuid.UUID("a4b6f2d1-52a9-4f9a-8f0f-3d0b6f3c0d21")


def user_id_for(username: str) -> uuid.UUID:
    """The id of the user called ``username`` (UUID 5 of the lower-cased name)."""
    return uuid.uuid5(_USER_NAMESPACE, username.strip().lower())


class User(PlatformAggregate):
    """A person who logs in: ``role`` is admin, editor or viewer."""

    UserCreated = UserCreated

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
