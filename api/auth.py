"""JWT access and refresh tokens (pyjwt, HS256) and the current user."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from commands.context import Actor
from commands.errors import Unauthenticated

ALGORITHM = "HS256"
_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")  # user ids, token ids and session ids


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

    def pair(self, user: dict[str, Any], session: str | None = None) -> dict[str, str]:
        """``{access, refresh}`` for a user row ``{id, username, role}``; both carry the
        session id ``rid``: ``session`` (a rotation) or, for a new session, the refresh
        token's own ``jti``."""
        jti = uuid.uuid4().hex
        rid = session or jti
        refresh = self._issue(user, "refresh", self.refresh_ttl_s, {"jti": jti, "rid": rid})
        return {"access": self._issue(user, "access", self.access_ttl_s, {"rid": rid}), "refresh": refresh}

    def access_from_refresh(self, refresh: str, user: dict[str, Any]) -> str:
        """A new access token of ``refresh``'s session."""
        claims = self.decode(refresh, "refresh")
        return self._issue(user, "access", self.access_ttl_s, {"rid": session_of(claims)})

    def decode(self, token: str, kind: str) -> dict[str, Any]:
        """The claims of a valid token of ``kind``.

        Raises:
            Unauthenticated: expired, tampered, malformed (a claim missing or of the wrong
            type: ``sub``, ``jti`` and ``rid`` ids, ``iat`` and ``iat_us`` integers) or of
            another kind.
        """
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self.secret, algorithms=[ALGORITHM], options={"require": ["exp", "iat", "sub", "type", "jti"]}
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("the token is invalid") from None
        if not _well_formed(claims):
            raise Unauthenticated("the token is invalid")
        if claims.get("type") != kind:
            raise Unauthenticated(f"not an {kind} token")
        return claims


def _well_formed(claims: dict[str, Any]) -> bool:
    ids = [claims["sub"], claims["jti"], *([claims["rid"]] if "rid" in claims else [])]
    numbers = [claims["iat"], *([claims["iat_us"]] if "iat_us" in claims else [])]
    return (
        all(isinstance(v, str) and _ID.fullmatch(v) for v in ids)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in numbers)
        and isinstance(claims["type"], str)
    )


def session_of(claims: dict[str, Any]) -> str:
    """The session (refresh-token family) id of a token's claims: ``rid``, or the ``jti``
    of a refresh token issued before sessions had their own id."""
    return str(claims.get("rid") or claims["jti"])


def actor_of(user: dict[str, Any]) -> Actor:
    """The command actor of a user row."""
    return Actor(id=user["id"], username=user["username"], role=user["role"])
