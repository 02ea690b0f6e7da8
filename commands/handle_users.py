"""Command handlers for users: create, update, (de)activate, passwords, logout."""

from __future__ import annotations

import re
from uuid import UUID

from commands.base import Position, ServiceBase, retry_on_conflict
from commands.context import Context
from commands.errors import ConcurrentWrite, Conflict, Forbidden, NotFound, invalid
from commands.messages import ChangePassword, CreateUser, DeactivateUser, LogOut, ReactivateUser, ResetPassword, UpdateUser
from commands.permissions import require_admin
from commands.security import hash_password, verify_password
from commands.text import clean_optional, clean_text
from commands.user import User, user_id_for
from events.users import ROLES

_USERNAME = re.compile(r"[\w.@+-]{1,150}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MIN_PASSWORD = 8


def _check_password(password: object, field: str = "password") -> None:
    """Passwords are hashed, never stored: only their type and length are checked (and
    they are not normalised, so that a password set earlier keeps matching)."""
    if not isinstance(password, str):
        raise invalid(field, "must be a string")
    if len(password) < MIN_PASSWORD or len(password) > 1024:
        raise invalid(field, f"must be {MIN_PASSWORD}–1024 characters")


def _check_email(email: object) -> str | None:
    """The email in NFC (``None`` or ``""``: none). Raises InvalidCommand."""
    text = clean_optional(email, "email", max_length=254)
    if text and not _EMAIL.fullmatch(text):
        raise invalid("email", "not an email address")
    return text


class UserHandlers(ServiceBase):
    """Users and their credentials. Admins manage everyone; a user their own password.
    Each handler reads load → check → change → save."""

    def _user(self, user_id: UUID | str) -> User:
        return self._load(User, user_id, "user")

    @retry_on_conflict
    def create_user(self, cmd: CreateUser, ctx: Context) -> tuple[UUID, Position]:
        """Create a user. Raises Forbidden (not admin), InvalidCommand, Conflict (name taken)."""
        require_admin(ctx.actor, "user management")
        username = clean_text(cmd.username, "username", min_length=1, max_length=150, strip=True)
        if not _USERNAME.fullmatch(username):
            raise invalid("username", "1–150 letters, digits and @.+-_")
        if cmd.role not in ROLES:
            raise invalid("role", f"must be one of {', '.join(ROLES)}")
        _check_password(cmd.password)
        email = _check_email(cmd.email)
        user = User(username=username, role=cmd.role, email=email or None, password_hash=hash_password(cmd.password))
        try:
            return user.id, self._save(user)
        except ConcurrentWrite:  # the id is the name's: it is taken (a retry would not help)
            raise Conflict(f"a user named {username!r} exists") from None

    def user_exists(self, username: str) -> bool:
        """Whether a user of that name is in the store."""
        return self._get(User, user_id_for(username)) is not None

    @retry_on_conflict
    def update_user(self, cmd: UpdateUser, ctx: Context) -> Position:
        """Change email (the user or admins) and role (admins). Raises Forbidden, NotFound."""
        if cmd.management:
            require_admin(ctx.actor, "user management")
        if not ctx.actor.is_admin:
            if str(cmd.user_id) != ctx.actor.id:
                raise NotFound(f"no user {cmd.user_id}")
            if cmd.role is not None:
                raise Forbidden("only admins change roles")
        if cmd.role is not None and cmd.role not in ROLES:
            raise invalid("role", f"must be one of {', '.join(ROLES)}")
        email = _check_email(cmd.email)
        user = self._user(cmd.user_id)
        user.update({k: v for k, v in (("email", email), ("role", cmd.role)) if v is not None})
        return self._save(user)

    @retry_on_conflict
    def deactivate_user(self, cmd: DeactivateUser, ctx: Context) -> Position:
        """Deactivate a user (admins; not oneself). Raises Forbidden, NotFound, Conflict."""
        require_admin(ctx.actor, "user management")
        if str(cmd.user_id) == ctx.actor.id:
            raise Conflict("you cannot deactivate yourself")
        user = self._user(cmd.user_id)
        user.deactivate()
        return self._save(user)

    @retry_on_conflict
    def reactivate_user(self, cmd: ReactivateUser, ctx: Context) -> Position:
        """Reactivate a user (admins). Raises Forbidden, NotFound, Conflict (already active)."""
        require_admin(ctx.actor, "user management")
        user = self._user(cmd.user_id)
        user.reactivate()
        return self._save(user)

    @retry_on_conflict
    def change_password(self, cmd: ChangePassword, ctx: Context) -> Position:
        """The acting user changes their password. Raises InvalidCommand (wrong old password)."""
        _check_password(cmd.new_password, "new_password")
        user = self._user(ctx.actor.id)
        if not verify_password(user.password_hash, cmd.old_password):
            raise invalid("old_password", "is not your current password")
        user.change_password(hash_password(cmd.new_password), cmd.kept_session)
        return self._save(user)

    @retry_on_conflict
    def reset_password(self, cmd: ResetPassword, ctx: Context) -> Position:
        """An admin sets a user's password; all their sessions end. Raises Forbidden, NotFound."""
        require_admin(ctx.actor, "password resets")
        _check_password(cmd.new_password, "new_password")
        user = self._user(cmd.user_id)
        user.change_password(hash_password(cmd.new_password), None)
        return self._save(user)

    @retry_on_conflict
    def log_out(self, cmd: LogOut, ctx: Context) -> Position:
        """Revoke the acting user's session ``cmd.session``."""
        user = self._user(ctx.actor.id)
        user.log_out(cmd.session)
        return self._save(user)
