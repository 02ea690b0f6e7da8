"""``/api/token/``: log in (no signup), refresh, verify and log out."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import func, select

from api.audit import recent_failures
from api.deps import Services, ServicesDep, check_token, request_id
from api.errors import problem
from api.schemas import AccessToken, Credentials, RefreshBody, TokenPair, VerifyBody
from commands.context import Actor, Context
from commands.errors import Unauthenticated
from commands.messages import LogOut
from commands.security import verify_password
from projections import tables as t

router = APIRouter(prefix="/api/token", tags=["auth"])
MAX_FAILURES, WINDOW_S = 10, 300.0


def _user_by_name(services: Services, username: str) -> dict[str, Any] | None:
    with services.engine.connect() as conn:
        row = conn.execute(select(t.users).where(func.lower(t.users.c.username) == username.lower())).mappings().first()
    return dict(row) if row else None


@router.post("/", response_model=TokenPair, responses={401: {}, 429: {"description": "too many failed logins"}})
def obtain_token(body: Credentials, request: Request, services: ServicesDep) -> Any:
    """Exchange a username and password for an access and a refresh token. Bad
    credentials → 401; more than 10 failures for a username in 5 minutes → 429."""
    request.state.audit_target = body.username.lower()
    failures, oldest = recent_failures(services.engine, body.username, WINDOW_S)
    if failures >= MAX_FAILURES:
        wait = WINDOW_S - (datetime.now(UTC) - oldest).total_seconds() if oldest else WINDOW_S
        return problem(
            request,
            429,
            "Too many requests",
            "too many failed logins for this username; try later",
            slug="too-many-requests",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    user = _user_by_name(services, body.username)
    if not verify_password(user["password_hash"] if user else None, body.password) or not user or not user["is_active"]:
        raise Unauthenticated("no active account found with the given credentials")
    request.state.user = user
    return TokenPair(**services.tokens.pair(user))


@router.post("/refresh/", response_model=AccessToken)
def refresh_token(body: RefreshBody, request: Request, services: ServicesDep) -> AccessToken:
    """A new access token for a valid, not logged-out refresh token of an active user."""
    _claims, user = check_token(services, body.refresh, "refresh")
    request.state.user = user
    return AccessToken(access=services.tokens.access_from_refresh(body.refresh, user))


@router.post("/verify/")
def verify_token(body: VerifyBody, services: ServicesDep) -> dict[str, Any]:
    """200 ``{}`` if the token (access or refresh) is valid and not revoked, else 401."""
    try:
        check_token(services, body.token, "access")
    except Unauthenticated:
        check_token(services, body.token, "refresh")
    return {}


@router.post("/logout/", status_code=204, response_class=Response)
async def logout(body: RefreshBody, request: Request, services: ServicesDep) -> Response:
    """Revoke a refresh token and every access token issued from it (204)."""
    claims, user = await asyncio.to_thread(check_token, services, body.refresh, "refresh")
    request.state.user = user
    ctx = Context(Actor(user["id"], user["username"], user["role"]), request_id(request))
    position = await asyncio.to_thread(services.platform.log_out, LogOut(claims["jti"]), ctx)
    await asyncio.to_thread(services.wait_for, position)
    return Response(status_code=204, headers={"Aiorch-Position": str(position)})
