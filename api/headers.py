"""Security headers on every HTTP answer (OWASP Secure Headers): pure ASGI."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: one year, the value HSTS preload lists ask for
HSTS_MAX_AGE_S = 365 * 24 * 3600

#: sent on every answer unless the answer set the header itself. The CSP holds only
#: ``frame-ancestors``: a fuller policy would break the inline scripts that start /docs and /redoc.
BASE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
}


def security_headers(public_url: str | None) -> dict[str, str]:
    """The headers for a deployment: :data:`BASE_HEADERS`, plus
    ``Strict-Transport-Security`` when ``public_url`` (``AIORCH_PUBLIC_URL``) is https."""
    headers = dict(BASE_HEADERS)
    if public_url and public_url.lower().startswith("https://"):
        headers["Strict-Transport-Security"] = f"max-age={HSTS_MAX_AGE_S}"
    return headers


class SecurityHeadersMiddleware:
    """Adds ``headers`` to every HTTP answer that does not carry them already
    (``Referrer-Policy: no-referrer`` also keeps signed download links out of referrers)."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
