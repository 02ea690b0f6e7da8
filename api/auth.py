"""JWT access and refresh tokens (pyjwt, HS256) and the current user."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from commands.context import Actor
from commands.errors import Unauthenticated

ALGORITHM = "HS256"


@dataclass(frozen=True)
class TokenIssuer:
    """Issues and verifies tokens signed with ``secret``; TTLs in seconds."""

    secret: str
    access_ttl_s: int = 15 * 60
    refresh_ttl_s: int = 7 * 24 * 3600

    def _issue(self, user: dict[str, Any], kind: str, ttl: int, extra: dict[str, Any] | None = None) -> str:
        now_us = time.time_ns() // 1000
        now = now_us // 1_000_000
        claims = {
            "sub": user["id"],
            "username": user["username"],
            "role": user["role"],
            "type": kind,
            "iat": now,
            "iat_us": now_us,  # microseconds: a password change revokes tokens issued before it
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            **(extra or {}),
        }
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def pair(self, user: dict[str, Any]) -> dict[str, str]:
        """``{access, refresh}`` for a user row ``{id, username, role}``."""
        refresh = self._issue(user, "refresh", self.refresh_ttl_s)
        rid = jwt.decode(refresh, self.secret, algorithms=[ALGORITHM])["jti"]
        return {"access": self._issue(user, "access", self.access_ttl_s, {"rid": rid}), "refresh": refresh}

    def access_from_refresh(self, refresh: str, user: dict[str, Any]) -> str:
        """A new access token bound to ``refresh``'s id."""
        claims = self.decode(refresh, "refresh")
        return self._issue(user, "access", self.access_ttl_s, {"rid": claims["jti"]})

    def decode(self, token: str, kind: str) -> dict[str, Any]:
        """The claims of a valid token of ``kind``.

        Raises:
            Unauthenticated: expired, tampered, malformed or of another kind.
        """
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self.secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "type"]}
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("the token is invalid") from None
        if claims.get("type") != kind:
            raise Unauthenticated(f"not an {kind} token")
        return claims


def actor_of(user: dict[str, Any]) -> Actor:
    """The command actor of a user row."""
    return Actor(id=user["id"], username=user["username"], role=user["role"])
