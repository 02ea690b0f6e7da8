"""RFC 9457 problem+json for every error, and the request id of every response."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError as SAOperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from commands.errors import DomainError

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
_TYPE_BASE = "https://aiorch.dev/problems/"


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


class RequestIdMiddleware(BaseHTTPMiddleware):
    """Accept ``X-Request-ID`` (≤ 200 printable characters) or generate one; echo it."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        rid = request.headers.get("x-request-id", "")
        if not rid or len(rid) > 200 or not rid.isprintable():
            rid = str(uuid.uuid4())
        request.state.request_id = rid
        response = await call_next(request)
        response.headers["X-Request-ID"] = rid
        return response


class ServiceUnavailable(Exception):
    """A read waited past its bound, or a part the request needs is down (503)."""

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.detail, self.retry_after = detail, retry_after


def install(app: FastAPI) -> None:
    """Register the exception handlers that map errors to problem+json."""

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return problem(request, exc.status, exc.title, exc.detail, slug=exc.slug, errors=exc.errors, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(map(str, e["loc"])), "msg": e["msg"]} for e in exc.errors()]
        return problem(request, 422, "Validation error", "the request is invalid", slug="validation-error", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed", 401: "Not authenticated"}.get(exc.status_code, "Error")
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
