"""Bounded request bodies, checked before a byte of them is read (issue 13).

:class:`BodyLimits` is a pure ASGI middleware (it never buffers a body):

It sits just outside :class:`~api.forms.FormBodies`, below every other layer (all pure ASGI).

1. A ``Content-Length`` over the limit → 413 at once, before authentication. The limit is
   ``AIORCH_MAX_BODY_BYTES`` (default 1 MiB) for every body except a multipart job
   submission (``POST /api/jobs/``), whose limit is the most files a job type takes ×
   ``AIORCH_MAX_UPLOAD_BYTES`` + :data:`~api.uploads.FIELDS_BYTES` + 64 KiB of framing; the
   per-user file limit is checked by the route as the bytes stream in.
2. A body without ``Content-Length`` (chunked) is counted as it is received: 413 the moment
   the limit is passed.
3. A request with a body to ``/api/`` (except ``/api/token/``, where logins and refreshes
   come without a token) is authenticated before its body is read: a missing or invalid
   bearer token → 401 and the body is never read. (The route's ``current_user`` takes this
   check's result, ``api.deps.CHECKED_TOKEN``, instead of querying again; role checks that
   need no body, such as viewers submitting jobs, are made by the route before it reads the
   body.)
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import CHECKED_TOKEN, check_token
from api.errors import domain_problem
from api.uploads import FIELDS_BYTES
from commands.errors import DomainError, PayloadTooLarge, Unauthenticated
from commands.job_parameters import FILE_FIELDS

log = logging.getLogger(__name__)
#: paths whose POST takes a multipart upload (streamed by the route, see api.routers.jobs)
UPLOAD_PATHS = frozenset({"/api/jobs/"})
#: paths under /api/ whose bodies come without a token (logins, refreshes)
ANONYMOUS_PATHS = ("/api/token/",)
#: part headers and boundaries of a multipart upload
FRAMING_BYTES = 64 * 1024


class BodyTooLarge(PayloadTooLarge, HTTPException):
    """A body passed its limit while it was read (413). It is an ``HTTPException`` too, so
    that FastAPI's body parsing lets it through instead of answering 400."""

    def __init__(self, limit: int) -> None:
        PayloadTooLarge.__init__(self, f"the request body is over the limit of {limit} bytes")
        self.status_code, self.headers = 413, None


class BodyLimits:
    """The middleware described in the module docstring; sizes in bytes."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        most_files = max(len(fields) for fields in FILE_FIELDS.values())
        self.max_upload_body_bytes = most_files * max_upload_bytes + FIELDS_BYTES + FRAMING_BYTES

    def limit_of(self, request: Request) -> int:
        """The most bytes the body of ``request`` may have."""
        if (
            request.method == "POST"
            and request.url.path in UPLOAD_PATHS
            and request.headers.get("content-type", "").startswith("multipart/form-data")
        ):
            return self.max_upload_body_bytes
        return self.max_body_bytes

    @staticmethod
    def needs_user(request: Request) -> bool:
        """Whether ``request`` goes where a user is needed: ``/api/`` but not ``/api/token/``."""
        path = request.url.path
        return path.startswith("/api/") and not path.startswith(ANONYMOUS_PATHS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        limit = self.limit_of(request)
        length = request.headers.get("content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None and declared > limit:
            await self._too_large(request, limit)(scope, receive, send)
            return
        has_body = bool(declared) or "chunked" in request.headers.get("transfer-encoding", "").lower()
        if has_body and self.needs_user(request) and self._route(scope):
            refusal = await self._authenticate(request)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        received, started = 0, False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if started:
                raise
            await self._too_large(request, limit)(scope, receive, send)

    @staticmethod
    def _route(scope: Scope) -> bool:
        """Whether a route takes this path and method. Its endpoint goes into ``scope`` so
        that an early refusal is audited as that command; an unknown path is left to the
        router (404, body unread)."""
        routes = list(getattr(getattr(scope.get("app"), "router", None), "routes", ()))
        while routes:
            route = routes.pop(0)
            match, child = route.matches(scope)
            if match is not Match.FULL:
                continue
            included = getattr(route, "original_router", None)  # FastAPI's included routers
            if included is not None and "endpoint" not in child:
                routes = list(included.routes)
                continue
            scope.update(child)
            return True
        return False

    @staticmethod
    def _too_large(request: Request, limit: int) -> Response:
        exc = BodyTooLarge(limit)
        return domain_problem(request, exc)

    @staticmethod
    async def _authenticate(request: Request) -> Response | None:
        """None when the bearer token is valid, else the 401 to answer."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authentication credentials were not provided")
            checked = await run_in_threadpool(check_token, request.app.state.services, token.strip(), "access")
            setattr(request.state, CHECKED_TOKEN, (token.strip(), *checked))  # the route's check reuses it
        except DomainError as exc:
            return domain_problem(request, exc, headers={"WWW-Authenticate": "Bearer"})
        except Exception:  # e.g. the database is down: the route's own check answers it
            log.debug("the early token check failed; leaving it to the route", exc_info=True)
        return None
