"""Absolute URLs in answers, as DRF builds them (``request.build_absolute_uri``).

The base of every URL in an answer (file ``url``s, ``next``/``previous`` links) is
``AIORCH_PUBLIC_URL`` when it is set; else the request's own scheme and ``Host``, where
``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are believed only when the request's peer is
one of ``AIORCH_TRUSTED_PROXIES`` (addresses or CIDRs).

:class:`BaseUrls` (a pure ASGI middleware) works the base out once per request or WebSocket
and keeps it in a context variable, so that code shaping answers deep down
(:func:`api.views.job_json`) makes a path absolute with :func:`absolute` without being
handed the request. Outside a request (a background task) paths stay relative.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from contextvars import ContextVar

from starlette.datastructures import URL, Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.throttle import Network

_BASE: ContextVar[str] = ContextVar("aiorch_base_url", default="")
#: a host with an optional port, as X-Forwarded-Host may carry it (nothing else is believed)
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$")
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _trusted(peer: str | None, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address((peer or "").strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in trusted)


def _first(value: str | None) -> str:
    """The first entry of a comma-separated forwarded header (the one the edge proxy saw)."""
    return (value or "").split(",")[0].strip()


def base_of(scope: Scope, public_url: str | None, trusted: Sequence[Network]) -> str:
    """``scheme://host[:port]`` (or ``AIORCH_PUBLIC_URL`` without its trailing slash) for
    absolute URLs in the answer to the request of ``scope``."""
    if public_url:
        return public_url.rstrip("/")
    headers = Headers(scope=scope)
    scheme = _SCHEMES.get(scope.get("scheme", "http"), "http")
    host = headers.get("host", "")
    if not _HOST.match(host):
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else "localhost"
    client = scope.get("client")
    if trusted and client and _trusted(client[0], trusted):
        proto = _first(headers.get("x-forwarded-proto")).lower()
        if proto in ("http", "https"):
            scheme = proto
        forwarded_host = _first(headers.get("x-forwarded-host"))
        if forwarded_host and _HOST.match(forwarded_host):
            host = forwarded_host
    return f"{scheme}://{host}"


def absolute(path: str) -> str:
    """``path`` (``/api/...``) under the current request's base; unchanged outside a request
    or when it is already absolute."""
    return _BASE.get() + path if path.startswith("/") else path


def absolute_url(request: Request) -> URL:
    """The URL of ``request`` (path and query) under its base."""
    query = request.url.query
    return URL(absolute(request.url.path) + (f"?{query}" if query else ""))


class BaseUrls:
    """Sets the base of absolute URLs for each HTTP request and WebSocket (see the module)."""

    def __init__(self, app: ASGIApp, *, public_url: str | None = None, trusted: Sequence[Network] = ()) -> None:
        self.app, self.public_url, self.trusted = app, public_url, list(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = _BASE.set(base_of(scope, self.public_url, self.trusted))
        try:
            await self.app(scope, receive, send)
        finally:
            _BASE.reset(token)
