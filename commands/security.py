"""Password hashing with Argon2id (argon2-cffi, RFC 9106 defaults)."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash of a fixed password, verified against when a username is unknown so that
    unknown and known usernames take the same time to refuse. Made on first use (one
    Argon2 hash: 64 MiB and tens of milliseconds), not when the module is imported."""
    return _hasher.hash("aiorch-dummy-password-for-timing")


def hash_password(password: str) -> str:
    """The Argon2id hash (PHC string) of ``password``."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (None: an unknown user, always False)."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False
