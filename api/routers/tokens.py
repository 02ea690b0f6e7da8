"""``/api/token/``: log in (no signup), refresh and verify JWTs."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from api.deps import ServicesDep
from api.schemas import AccessToken, Credentials, RefreshBody, TokenPair, VerifyBody
from commands.errors import Unauthenticated
from commands.security import verify_password
from projections import tables as t

router = APIRouter(prefix="/api/token", tags=["auth"])


def _user(services: ServicesDep, **where: str) -> dict[str, object] | None:
    col, value = next(iter(where.items()))
    with services.engine.connect() as conn:
        row = conn.execute(select(t.users).where(t.users.c[col] == value)).mappings().first()
    return dict(row) if row else None


@router.post("/", response_model=TokenPair)
def obtain(body: Credentials, services: ServicesDep) -> TokenPair:
    """Exchange a username and password for an access and a refresh token. Bad credentials → 401."""
    user = _user(services, username=body.username)
    if not verify_password(user["password_hash"] if user else None, body.password) or not user or not user["is_active"]:  # type: ignore[arg-type]
        raise Unauthenticated("no active account found with the given credentials")
    return TokenPair(**services.tokens.pair(user))


@router.post("/refresh/", response_model=AccessToken)
def refresh(body: RefreshBody, services: ServicesDep) -> AccessToken:
    """A new access token for a valid refresh token of an active user."""
    claims = services.tokens.decode(body.refresh, "refresh")
    user = _user(services, id=claims["sub"])
    if not user or not user["is_active"]:
        raise Unauthenticated("the user is unknown or inactive")
    return AccessToken(access=services.tokens.access_from_refresh(body.refresh, user))


@router.post("/verify/")
def verify(body: VerifyBody, services: ServicesDep) -> dict[str, object]:
    """200 ``{}`` if the token (access or refresh) is valid, else 401."""
    try:
        services.tokens.decode(body.token, "access")
    except Unauthenticated:
        services.tokens.decode(body.token, "refresh")
    return {}
