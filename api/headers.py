"""Security headers on every HTTP answer (OWASP Secure Headers): pure ASGI."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: one year, the value HSTS preload lists ask for
HSTS_MAX_AGE_S = 365 * 24 * 3600

#: sent on every answer unless the answer set the header itself. The CSP of API answers
#: holds only ``frame-ancestors``; the docs pages get :data:`DOCS_CSP`.
BASE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
}


#: the CSP of /docs and /redoc: everything from this app only (their assets are its own,
#: see fastapi-offline), so that the pages contact nothing outside even where a bundled
#: script names a CDN (ReDoc's footer logo); inline scripts and styles start and style them
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
#: the docs pages' paths (FastAPI's defaults)
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")


def docs_headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with the CSP of the docs pages (:data:`DOCS_CSP`)."""
    return {**headers, "Content-Security-Policy": DOCS_CSP}


def security_headers(public_url: str | None) -> dict[str, str]:
    """The headers for a deployment: :data:`BASE_HEADERS`, plus
    ``Strict-Transport-Security`` when ``public_url`` (``AIORCH_PUBLIC_URL``) is https."""
    headers = dict(BASE_HEADERS)
    if public_url and public_url.lower().startswith("https://"):
        headers["Strict-Transport-Security"] = f"max-age={HSTS_MAX_AGE_S}"
    return headers


class SecurityHeadersMiddleware:
    """Adds ``headers`` to every HTTP answer that does not carry them already
    (``Referrer-Policy: no-referrer`` also keeps signed download links out of referrers);
    an answer to one of the ``pages`` (exact paths) gets that page's headers instead."""

    def __init__(self, app: ASGIApp, headers: dict[str, str], pages: dict[str, dict[str, str]] | None = None) -> None:
        self.app = app
        self.headers = headers
        self.pages = pages or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        wanted = self.pages.get(scope.get("path", ""), self.headers)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in wanted.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
