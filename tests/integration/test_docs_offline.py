"""/docs and /redoc work offline (issue 12, item 4): the pages and their assets come from
the app itself (fastapi-offline), nothing they reference lies outside it, and a headless
Chromium that can resolve no host but loopback renders every operation.

The browser check needs the Debian package ``chromium`` (``.ci/run`` installs it). Where
it is absent the check is skipped, unless ``AIORCH_REQUIRE_BROWSER`` is set (``.ci/run``
sets it), when it fails instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.conftest import Runner

#: how long Chromium may let the page's scripts run, in virtual time (ms): Swagger UI and
#: ReDoc need a few seconds of it to fetch the spec and draw it
VIRTUAL_TIME_BUDGET_MS = 30_000
#: only loopback resolves: any other host name fails at once, so nothing outside is contacted
HOST_RULES = "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
#: a URL that leaves the page's origin: a scheme, or a protocol-relative ``//host``
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


class References(HTMLParser):
    """Every URL an HTML page makes the browser fetch or offer: ``src``, ``href``,
    ``spec-url`` (ReDoc), ``url(...)`` in inline styles, and ``url:`` in inline scripts."""

    ATTRIBUTES: ClassVar[set[str]] = {"src", "href", "spec-url", "action", "data", "poster", "srcset"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in = tag
        for name, value in attrs:
            if name in self.ATTRIBUTES and value:
                self.urls.append(value.strip())
            if name == "style" and value:
                self.urls += css_urls(value)

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.urls += css_urls(data)
        elif self._in == "script":
            self.urls += re.findall(r"""\burl\s*:\s*['"]([^'"]*)['"]""", data)
            self.urls += re.findall(r"""['"]((?:https?:)?//[^'"]+)['"]""", data)


def css_urls(css: str) -> list[str]:
    """The ``url(...)`` and ``@import`` targets of a style sheet (``data:`` ones left out)."""
    found = re.findall(r"""url\(\s*['"]?([^'")]+)""", css) + re.findall(r"""@import\s+['"]([^'"]+)""", css)
    return [u.strip() for u in found if not u.strip().lower().startswith("data:")]


def references(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    return parser.urls


@pytest.fixture
def api_url(system: Any) -> Iterator[str]:
    """The API alone (no processors: the docs need none), on a free loopback port."""
    runner = Runner(system, {})
    yield runner.api()
    runner.close()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_nothing_outside_the_app(api_url: str, page: str) -> None:
    http = httpx.Client(base_url=api_url, timeout=30)
    resp = http.get(page)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    urls = references(resp.text)
    assert urls, resp.text  # the page does load assets: they are the app's own
    external = [u for u in urls if EXTERNAL.match(u)]
    assert external == [], external
    # a favicon, served by the app (none from a CDN)
    assert any(u.endswith((".png", ".ico")) for u in urls), urls
    # Swagger UI's validator badge would send the spec to validator.swagger.io
    assert "validator.swagger.io" not in resp.text
    # and the browser is told to fetch nothing from elsewhere (ReDoc's bundle names a CDN logo)
    policy = dict(part.strip().split(" ", 1) for part in resp.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'self'" and policy["connect-src"] == "'self'", policy
    assert policy["img-src"] == "'self' data:" and policy["frame-ancestors"] == "'none'", policy
    for url in urls:
        asset = http.get(urljoin(api_url + page, url))
        assert asset.status_code == 200, (url, asset.status_code)
        if url.endswith(".css"):
            outside = [u for u in css_urls(asset.text) if EXTERNAL.match(u)]
            assert outside == [], (url, outside)
    # the spec the page draws has no server elsewhere either
    spec = http.get("/openapi.json").json()
    assert all(not EXTERNAL.match(s.get("url", "")) for s in spec.get("servers", [])), spec.get("servers")


def chromium() -> str | None:
    """The Chromium binary (``AIORCH_CHROMIUM``, else ``chromium`` on PATH), or None."""
    configured = os.environ.get("AIORCH_CHROMIUM")
    if configured:
        return configured
    return shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(binary: str, url: str, profile: Path, net_log: Path) -> str:
    """The DOM of ``url`` after the page's scripts ran, as headless Chromium serialises it.
    Chromium fetches no updates, components or safe-browsing lists
    (``--disable-background-networking``), resolves no host but loopback, and records
    every request it makes in ``net_log`` (a NetLog JSON file)."""
    args = [
        binary,
        "--headless",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-features=AutofillServerCommunication,NetworkTimeServiceQuerying,Translate,MediaRouter",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        f"--host-resolver-rules={HOST_RULES}",
        f"--user-data-dir={profile}",
        f"--log-net-log={net_log}",
        f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
        "--dump-dom",
        url,
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    done = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def page_requests(net_log: Path, origin: str) -> set[str]:
    """The URLs the page at ``origin`` (``http://127.0.0.1:port``) asked for, from
    Chromium's NetLog: its navigation and the requests it initiated, in its network
    partition. Chromium's own background attempts (update checks, network time, autofill
    hints) are not the page's; the host-resolver rules make them fail before they leave
    the machine."""
    site = origin.rsplit(":", 1)[0]
    log = json.loads(net_log.read_text(errors="replace"))
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    urls = set()
    for event in log.get("events", []):
        params = event.get("params") or {}
        if names.get(event.get("type")) != "URL_REQUEST_START_JOB" or not isinstance(params.get("url"), str):
            continue
        by_page = params.get("initiator") == origin or params.get("request_type") == "main frame"
        if by_page and str(params.get("network_isolation_key", "")).split(" ")[0] == site:
            urls.add(params["url"])
    return urls


def test_docs_render_every_operation_in_a_headless_browser_offline(api_url: str, tmp_path: Path) -> None:
    binary = chromium()
    if binary is None:
        if os.environ.get("AIORCH_REQUIRE_BROWSER"):
            pytest.fail("AIORCH_REQUIRE_BROWSER is set but no Chromium was found (install the Debian package chromium)")
        pytest.skip("no Chromium here (Debian package chromium); set AIORCH_REQUIRE_BROWSER=1 to make this a failure")
    spec = httpx.get(f"{api_url}/openapi.json", timeout=30).json()
    paths = set(spec["paths"])
    assert "/api/jobs/" in paths

    operations = {op["operationId"] for item in spec["paths"].values() for op in item.values() if "operationId" in op}

    dom = dump_dom(binary, f"{api_url}/docs", tmp_path / "profile-docs", tmp_path / "docs.netlog.json")
    # Swagger UI drew an operation block for every path of the spec
    assert 'class="opblock opblock-post' in dom and 'class="opblock opblock-get' in dom, dom[-3000:]
    drawn = set(re.findall(r'class="opblock-summary-path"[^>]*data-path="([^"]+)"', dom))
    assert "/api/jobs/" in drawn, dom[-3000:]
    assert paths <= drawn, sorted(paths - drawn)

    # ReDoc drew a section for every operation
    redoc = dump_dom(binary, f"{api_url}/redoc", tmp_path / "profile-redoc", tmp_path / "redoc.netlog.json")
    sections = set(re.findall(r'id="(?:[^"]*/)?operation/([^"]+)"', redoc))
    assert operations <= sections, sorted(operations - sections)[:20] or redoc[-3000:]

    # …and each page asked for nothing but the app's own page, assets and spec
    origin = urlsplit(api_url)
    for log in ("docs.netlog.json", "redoc.netlog.json"):
        asked = page_requests(tmp_path / log, api_url)
        assert f"{api_url}/openapi.json" in asked, (log, asked)
        outside = sorted(u for u in asked if urlsplit(u).netloc != origin.netloc)
        assert outside == [], (log, outside)
