"""RFC 9457 problem+json for every error, and the request id of every response.

Two pure-ASGI layers (no ``BaseHTTPMiddleware``): :class:`UnhandledErrorMiddleware`, outside
everything of ours, turns an exception no handler took into a 500 problem+json (Starlette's own
``ServerErrorMiddleware`` would answer plain text), and :class:`RequestIdMiddleware` gives
each request its id. :func:`clean_parameters` refuses control characters in query and path
parameters before any route reads them."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from fastapi import FastAPI, Request, WebSocketException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError as SAOperationalError
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from commands.errors import (
    Conflict,
    DomainError,
    FieldError,
    Forbidden,
    InvalidCommand,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    UnsupportedMediaType,
)

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
_TYPE_BASE = "https://aiorch.dev/problems/"


#: ``(status, title, type slug)`` of each domain error class (the nearest in its MRO wins).
PROBLEMS: dict[type[DomainError], tuple[int, str, str]] = {
    DomainError: (400, "Bad request", "bad-request"),
    Unauthenticated: (401, "Not authenticated", "unauthenticated"),
    Forbidden: (403, "Forbidden", "forbidden"),
    NotFound: (404, "Not found", "not-found"),
    Conflict: (409, "Conflict", "conflict"),
    PayloadTooLarge: (413, "Payload too large", "payload-too-large"),
    UnsupportedMediaType: (415, "Unsupported media type", "unsupported-media-type"),
    InvalidCommand: (422, "Validation error", "validation-error"),
}
#: Command fields that arrive as request headers (their ``loc`` is ``["header", name]``).
HEADER_FIELDS = frozenset({"Idempotency-Key"})
Loc = list[str | int]


class InvalidRequest(InvalidCommand):
    """A request the API itself refuses before any command (422), its ``errors`` located in
    the request already: ``[{"loc": ["query", "as_of"], "msg": ...}]``."""

    def __init__(self, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.located = errors


class ConflictAt(Conflict):
    """A 409 about request parts (``[{"loc": ["query", "min_position"], "msg": ...}]``)."""

    def __init__(self, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.located = errors


def problem_kind(exc: DomainError) -> tuple[int, str, str]:
    """``(status, title, slug)`` of ``exc`` (:data:`PROBLEMS`)."""
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    return PROBLEMS[DomainError]


def field_loc(field: FieldError) -> Loc:
    """Where a command's field is in the request: ``["body", *path]``, or ``["header", name]``
    for :data:`HEADER_FIELDS`."""
    if field.path and field.path[0] in HEADER_FIELDS:
        return ["header", *field.path]
    return ["body", *field.path]


def problem_errors(exc: DomainError) -> list[dict[str, Any]] | None:
    """The problem's ``errors`` ``[{loc, msg}]`` (None when it names no field)."""
    if isinstance(exc, InvalidRequest | ConflictAt):
        return exc.located
    if not exc.fields:
        return None
    return [{"loc": field_loc(f), "msg": f.msg} for f in exc.fields]


def domain_problem(request: Request, exc: DomainError, *, headers: dict[str, str] | None = None) -> JSONResponse:
    """The problem+json answer to ``exc``; a 401 carries ``WWW-Authenticate: Bearer``."""
    status, title, slug = problem_kind(exc)
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer", **(headers or {})}
    return problem(request, status, title, exc.detail, slug=slug, errors=problem_errors(exc), headers=headers)


def request_id(request: Request) -> str:
    """The request id (``X-Request-ID`` or generated); also the events' correlation id."""
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else str(uuid.uuid4())


def problem(
    request: Request,
    status: int,
    title: str,
    detail: str,
    *,
    slug: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response ``{type, title, status, detail, instance[, errors]}``."""
    body: dict[str, Any] = {
        "type": _TYPE_BASE + (slug or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request_id(request),
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def ensure_request_id(scope: Scope) -> str:
    """The request id of ``scope``, assigned once into ``scope["state"]``: a valid
    ``X-Request-ID`` (≤ 200 printable characters) or a new UUID4."""
    state = scope.setdefault("state", {})
    rid = state.get("request_id")
    if not isinstance(rid, str):
        rid = Headers(scope=scope).get("x-request-id", "")
        if not rid or len(rid) > 200 or not rid.isprintable():
            rid = str(uuid.uuid4())
        state["request_id"] = rid
    return rid


class RequestIdMiddleware:
    """Accept ``X-Request-ID`` (≤ 200 printable characters) or generate one; echo it on
    every HTTP answer. Pure ASGI; WebSockets pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ensure_request_id(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        await self.app(scope, receive, send_with_id)


class UnhandledErrorMiddleware:
    """The last line: an exception that no handler took answers 500 problem+json with the
    request id (``instance`` and ``X-Request-ID``) and is logged with its traceback; the
    exception's text never reaches the client. Register it outside every other layer of
    ours (CORS may stay outside it, so that browsers can read the 500). When the answer had
    already begun, the exception is re-raised and the server drops the connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            rid = ensure_request_id(scope)
            log.exception("unhandled error answering %s %s (request %s)", scope.get("method"), scope.get("path"), rid)
            if started:
                raise
            response = problem(
                Request(scope),
                500,
                "Internal server error",
                "an unexpected error occurred; quote the request id (instance) when reporting it",
                slug="internal-error",
                headers={"X-Request-ID": rid},
            )
            await response(scope, receive, send)


def _has_control(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def without_controls(text: str) -> str:
    """``text`` with each C0 control character and DEL (PostgreSQL refuses NUL) as U+FFFD."""
    return "".join("\ufffd" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in text)


def clean_parameters(conn: HTTPConnection) -> None:
    """An app-wide dependency: no query or path parameter (name or value) may hold a C0
    control character (U+0000–U+001F) or DEL, which no filter or id needs and PostgreSQL
    refuses (NUL). Raises InvalidCommand (422 naming the parameters); a WebSocket is refused
    at its handshake (close 1008) instead."""
    bad = [("query", without_controls(k)[:100]) for k, v in conn.query_params.multi_items() if _has_control(k) or _has_control(v)]
    bad += [("path", k) for k, v in conn.path_params.items() if isinstance(v, str) and _has_control(v)]
    if not bad:
        return
    if conn.scope["type"] == "websocket":
        raise WebSocketException(code=1008, reason="control characters in the parameters")
    raise InvalidRequest(
        "parameters must not contain control characters",
        errors=[{"loc": list(loc), "msg": "control characters are not allowed"} for loc in dict.fromkeys(bad)],
    )


class ServiceUnavailable(Exception):
    """A read waited past its bound, or a part the request needs is down (503)."""

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.detail, self.retry_after = detail, retry_after


def install(app: FastAPI) -> None:
    """Register the exception handlers that map errors to problem+json."""

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return domain_problem(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(map(str, e["loc"])), "msg": e["msg"]} for e in exc.errors()]
        return problem(request, 422, "Validation error", "the request is invalid", slug="validation-error", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 401: "Not authenticated"}
        title = titles.get(exc.status_code, "Error")
        return problem(request, exc.status_code, title, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(request: Request, exc: ServiceUnavailable) -> JSONResponse:
        return problem(request, 503, "Service unavailable", exc.detail, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(SAOperationalError)
    @app.exception_handler(StoreOperationalError)
    @app.exception_handler(StoreInterfaceError)
    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return problem(
            request, 503, "Service unavailable", "the database is unavailable; retry shortly", headers={"Retry-After": "2"}
        )
