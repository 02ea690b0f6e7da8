"""``/api/token/``: log in (no signup), refresh (rotating), verify and log out. Every answer
carries ``Cache-Control: no-store`` and ``Pragma: no-cache``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from sqlalchemy import func, select

from api import sessions
from api.auth import session_of
from api.deps import Services, ServicesDep, check_token
from api.errors import problem, request_id
from api.schemas import Credentials, Empty, RefreshBody, TokenPair, VerifyBody
from api.throttle import Throttled
from commands.context import Actor, Context
from commands.errors import Unauthenticated
from commands.messages import LogOut
from commands.security import verify_password
from projections import tables as t

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
BAD_CREDENTIALS = "no active account found with the given credentials"


class NoStoreRoute(APIRoute):
    """A route whose answers, errors included, are never cached (RFC 6749 §5.1)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def no_store(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as exc:  # answer it here, with the app's handler, to add the headers
                answer = next((h for c in type(exc).__mro__ if (h := request.app.exception_handlers.get(c))), None)
                if answer is None:
                    raise
                response = await answer(request, exc)
            response.headers.update(NO_STORE)
            return response

        return no_store


router = APIRouter(prefix="/api/token", tags=["auth"], route_class=NoStoreRoute)


def _user_by_name(services: Services, username: str) -> dict[str, Any] | None:
    """The users read model's row of ``username`` (lower case), or None. A name not found
    while the read models are behind the store's head is looked up again once they reach it
    (≤ ``AIORCH_READ_WAIT_S``): a user created a moment ago (``aiorch users create``) can log
    in at once."""

    def lookup() -> dict[str, Any] | None:
        with services.engine.connect() as conn:
            row = conn.execute(select(t.users).where(func.lower(t.users.c.username) == username)).mappings().first()
        return dict(row) if row else None

    user = lookup()
    behind = user is None and services.projected_position() < (head := int(services.platform.head()))
    return lookup() if behind and services.wait_for(head) else user


def _storable(text: str) -> bool:
    """Whether ``text`` can be a stored name or a password: UTF-8 encodable, no NUL."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _too_many(request: Request, detail: str, retry_after: int) -> Response:
    return problem(request, 429, "Too many requests", detail, slug="too-many-requests", headers={"Retry-After": str(retry_after)})


@router.post("/", response_model=TokenPair, responses={401: {}, 429: {"description": "too many failed logins, or busy"}})
def obtain_token(body: Credentials, request: Request, services: ServicesDep) -> Any:
    """Exchange a username and password for an access and a refresh token. Bad
    credentials → 401; more than 10 failures for a (username, client address) in 5 minutes →
    429; failures for a username from all addresses slow its logins (429 with a Retry-After
    of at most 30 s); all password-check slots of this process busy → 429 (Retry-After 1)."""
    if not (_storable(body.username) and _storable(body.password)):
        raise Unauthenticated(BAD_CREDENTIALS)  # no such user can exist: no check, no count
    username = body.username.lower()
    request.state.audit_target = username
    guard = services.login_guard
    try:
        attempt = guard.throttle.reserve(username, guard.address(request))
    except Throttled as exc:
        return _too_many(request, exc.detail, exc.retry_after)
    checked = False
    try:
        user = _user_by_name(services, username)
        if not guard.checks.acquire():
            return _too_many(request, "too many logins at once; retry shortly", 1)
        try:
            checked = True
            valid = verify_password(user["password_hash"] if user else None, body.password)
        finally:
            guard.checks.release()
    finally:
        if not checked:
            guard.throttle.release(attempt)
    if not valid or not user or not user["is_active"]:
        raise Unauthenticated(BAD_CREDENTIALS)  # the attempt stays counted as a failure
    guard.throttle.succeeded(attempt)
    request.state.user = user
    return TokenPair(**services.tokens.pair(user))


@router.post("/refresh/", response_model=TokenPair, responses={401: {}})
async def refresh_token(body: RefreshBody, request: Request, services: ServicesDep) -> TokenPair:
    """Rotate a valid refresh token: a new ``{access, refresh}`` of the same session. A
    refresh token presented again within 10 s of its rotation → 401 (nothing revoked); later →
    401 and its whole session is logged out."""
    claims, user = await asyncio.to_thread(check_token, services, body.refresh, "refresh")
    request.state.user = user
    session = session_of(claims)
    keep_s = float(services.tokens.refresh_ttl_s)
    outcome = await asyncio.to_thread(sessions.rotate, services.engine, claims["jti"], session, keep_s)
    if outcome is sessions.Rotation.RACED:
        raise Unauthenticated("the refresh token was already used")
    if outcome is sessions.Rotation.REUSED:
        ctx = Context(Actor(user["id"], user["username"], user["role"]), request_id(request))
        position = await services.command(services.platform.log_out, LogOut(session), ctx)
        await services.await_position(position)
        raise Unauthenticated("the refresh token was used again; its session is logged out")
    return TokenPair(**services.tokens.pair(user, session))


@router.post("/verify/", response_model=Empty)
def verify_token(body: VerifyBody, services: ServicesDep) -> dict[str, Any]:
    """200 ``{}`` if the token (access, or a refresh token not yet rotated) is valid and not
    revoked, else 401."""
    try:
        check_token(services, body.token, "access")
    except Unauthenticated:
        claims, _user = check_token(services, body.token, "refresh")
        if sessions.was_rotated(services.engine, claims["jti"]):
            raise Unauthenticated("the refresh token was already used") from None
    return {}


@router.post("/logout/", status_code=204, response_class=Response)
async def logout(body: RefreshBody, request: Request, services: ServicesDep) -> Response:
    """Revoke a refresh token's session: every refresh and access token of it (204)."""
    claims, user = await asyncio.to_thread(check_token, services, body.refresh, "refresh")
    request.state.user = user
    ctx = Context(Actor(user["id"], user["username"], user["role"]), request_id(request))
    position = await services.command(services.platform.log_out, LogOut(session_of(claims)), ctx)
    await services.await_position(position)
    return Response(status_code=204, headers={"Aiorch-Position": str(position)})
