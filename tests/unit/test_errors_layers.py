"""The pure-ASGI layers of api/errors.py and api/headers.py on a tiny Starlette app: why the
500 layer is ours (Starlette alone answers plain text), HSTS only behind an https public URL."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.errors import RequestIdMiddleware, UnhandledErrorMiddleware, without_controls
from api.headers import SecurityHeadersMiddleware, security_headers


def boom(_request: object) -> PlainTextResponse:
    raise RuntimeError("internal detail")


def late_boom(_request: object) -> StreamingResponse:
    def chunks() -> object:
        yield b"started"
        raise RuntimeError("after the answer began")

    return StreamingResponse(chunks())


def ok(_request: object) -> PlainTextResponse:
    return PlainTextResponse("ok", headers={"X-Frame-Options": "SAMEORIGIN"})


ROUTES = [Route("/boom", boom), Route("/late", late_boom), Route("/ok", ok)]


def app(public_url: str | None = None, *, ours: bool = True) -> Starlette:
    layers = [
        Middleware(SecurityHeadersMiddleware, headers=security_headers(public_url)),
        Middleware(UnhandledErrorMiddleware),
        Middleware(RequestIdMiddleware),
    ]
    return Starlette(routes=ROUTES, middleware=layers if ours else [])


def test_starlette_alone_answers_plain_text_ours_problem_json() -> None:
    plain = TestClient(app(ours=False), raise_server_exceptions=False).get("/boom")
    assert plain.status_code == 500 and plain.headers["content-type"].startswith("text/plain")

    resp = TestClient(app(), raise_server_exceptions=False).get("/boom", headers={"X-Request-ID": "req-1"})
    assert resp.status_code == 500 and resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["instance"] == "req-1" and resp.headers["x-request-id"] == "req-1"
    assert "internal detail" not in resp.text
    assert resp.headers["x-content-type-options"] == "nosniff"


def test_an_error_after_the_answer_began_is_raised_not_answered_twice() -> None:
    with pytest.raises(RuntimeError, match="after the answer began"):
        TestClient(app()).get("/late")


def test_security_headers_and_hsts_only_for_https() -> None:
    resp = TestClient(app()).get("/ok")
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert resp.headers["content-security-policy"] == "frame-ancestors 'none'"
    assert resp.headers["x-frame-options"] == "SAMEORIGIN"  # an answer's own header is kept
    assert "strict-transport-security" not in resp.headers
    assert "strict-transport-security" not in TestClient(app("http://aiorch.example")).get("/ok").headers
    hsts = TestClient(app("https://aiorch.example")).get("/ok").headers["strict-transport-security"]
    assert hsts == "max-age=31536000"


def test_without_controls() -> None:
    assert without_controls("a\x00b\x1f\x7fc\td") == "a\ufffdb\ufffd\ufffdc\ufffdd"
    assert without_controls("é ü 中") == "é ü 中"
